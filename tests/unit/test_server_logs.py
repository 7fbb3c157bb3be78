from tritonrepo.server import load_failures


def test_load_failure_lines_are_parsed():
    text = ("E1126 model_lifecycle.cc:654] \"failed to load 'ner' version 1: Invalid argument: bad dims\"\n"
            "| sbert | 1 | UNAVAILABLE: Internal: ImportError: no module |\n")
    assert load_failures(text) == {"ner": "Invalid argument: bad dims", "sbert": "Internal: ImportError: no module"}
