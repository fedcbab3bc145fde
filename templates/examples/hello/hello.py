"""The smallest thing worth testing."""


def greet(name: str) -> str:
    return f"hello, {name}"
