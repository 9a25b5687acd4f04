package org.orchard.e2e;

import static org.junit.Assert.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.util.List;
import org.junit.Test;

public class AppTest {
  @Test
  public void greetingIsCapitalizedAndTagsSorted() throws Exception {
    assertEquals(
        "{\"greeting\":\"Hello, Orchard!\",\"tags\":[\"cache\",\"maven\",\"proxy\"]}",
        App.greetingJson("  orchard ", List.of("proxy", "cache", "maven")));
  }

  @Test
  public void outputIsValidJson() throws Exception {
    JsonNode node = new ObjectMapper().readTree(App.greetingJson("bob", List.of()));
    assertEquals("Hello, Bob!", node.get("greeting").asText());
    assertEquals(0, node.get("tags").size());
  }
}
