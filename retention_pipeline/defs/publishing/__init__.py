"""Publishing: what people read, made from the marts after every run (the HTML report)."""
