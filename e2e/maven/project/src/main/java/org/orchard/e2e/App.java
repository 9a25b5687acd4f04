package org.orchard.e2e;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.datatype.jdk8.Jdk8Module;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import java.util.List;
import java.util.Optional;
import org.apache.commons.lang3.StringUtils;

/** Builds a small JSON greeting; compiling it needs jackson, guava and commons-lang3. */
public final class App {
  // Jdk8Module: without it Jackson refuses to serialize Optional
  private static final ObjectMapper MAPPER = new ObjectMapper().registerModule(new Jdk8Module());

  private App() {}

  /** Returns {"greeting":"Hello, Name!","nickname":...,"tags":[sorted tags]}. */
  public static String greetingJson(String name, Optional<String> nickname, List<String> tags)
      throws JsonProcessingException {
    ImmutableMap<String, Object> doc =
        ImmutableMap.of(
            "greeting", "Hello, " + StringUtils.capitalize(StringUtils.trim(name)) + "!",
            "nickname", nickname.map(StringUtils::upperCase),
            "tags", ImmutableList.sortedCopyOf(tags));
    return MAPPER.writeValueAsString(doc);
  }

  public static void main(String[] args) throws JsonProcessingException {
    System.out.println(
        greetingJson(args.length > 0 ? args[0] : "orchard", Optional.empty(), List.of(args)));
  }
}
