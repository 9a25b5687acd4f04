package org.orchard.e2e;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.List;
import java.util.Optional;
import org.junit.Test;

public class AppTest {
  @Test
  public void greetingIsCapitalizedAndTagsSorted() throws Exception {
    assertEquals(
        "{\"greeting\":\"Hello, Orchard!\",\"nickname\":\"ORC\",\"tags\":[\"cache\",\"maven\",\"proxy\"]}",
        App.greetingJson("  orchard ", Optional.of("orc"), List.of("proxy", "cache", "maven")));
  }

  @Test
  public void emptyOptionalIsNullInValidJson() throws Exception {
    JsonNode node = new ObjectMapper().readTree(App.greetingJson("bob", Optional.empty(), List.of()));
    assertEquals("Hello, Bob!", node.get("greeting").asText());
    assertTrue(node.get("nickname").isNull());
    assertEquals(0, node.get("tags").size());
  }
}
