package org.orchard.e2e;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.common.collect.ImmutableList;
import com.google.common.collect.ImmutableMap;
import java.util.List;
import org.apache.commons.lang3.StringUtils;

/** Builds a small JSON greeting; compiling it needs jackson, guava and commons-lang3. */
public final class App {
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private App() {}

  /** Returns {"greeting":"Hello, Name!","tags":[...]} with the name capitalized. */
  public static String greetingJson(String name, List<String> tags) throws JsonProcessingException {
    ImmutableMap<String, Object> doc =
        ImmutableMap.of(
            "greeting", "Hello, " + StringUtils.capitalize(StringUtils.trim(name)) + "!",
            "tags", ImmutableList.sortedCopyOf(tags));
    return MAPPER.writeValueAsString(doc);
  }

  public static void main(String[] args) throws JsonProcessingException {
    System.out.println(greetingJson(args.length > 0 ? args[0] : "orchard", List.of(args)));
  }
}
