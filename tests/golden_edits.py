"""Hand edits of golden files, as a reviewer (or a hostile pull request) would make them."""

from __future__ import annotations


def rename_token(record: dict[str, object], suffix: str = "!") -> tuple[int, str]:
    """Give the first step's token another text everywhere the golden names it, and rebuild the
    text from the step texts: a golden that agrees with itself, yet not with the model."""
    steps = record["steps"]
    assert isinstance(steps, list)
    token, old = steps[0]["token"], steps[0]["text"]
    new = old + suffix
    for step in steps:
        if step["token"] == token:
            step["text"] = new
        for entry in step["top"]:
            if entry[0] == token:
                entry[1] = new
    pieces = [step["text"] for step in steps]
    if record["finish_reason"] == "stop" and pieces[-1].startswith("<|"):
        pieces = pieces[:-1]  # the end token has no text
    record["text"] = "".join(pieces).split("\n")
    return token, new
