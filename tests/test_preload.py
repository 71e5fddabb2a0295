"""The console pages' module graph, which they preload in one batch."""

from console.preload import module_graph


def test_the_vnc_page_preloads_its_whole_graph_once():
    graph = module_graph("console/vnc-console.js")
    assert graph[0] == "console/vnc-console.js"
    assert {"console/console-page.js", "console/type-text.js", "novnc/core/rfb.js"} <= set(graph)
    assert any(path.startswith("novnc/core/util/") for path in graph)  # imports of imports
    assert len(graph) == len(set(graph))


def test_the_spice_page_reaches_spice_html5s_modules():
    graph = module_graph("console/spice-console.js")
    assert {"spice-html5/main.js", "spice-html5/enums.js", "spice-html5/spicemsg.js"} <= set(graph)
    assert len(graph) > 20 and len(graph) == len(set(graph))


def test_an_unknown_entry_has_no_graph():
    assert module_graph("console/no-such-module.js") == ()
