"""The REST API of the annotation app, one module per resource; ``urls.py`` wires them."""
