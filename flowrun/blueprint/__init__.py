"""File -> checked Blueprint: load (yaml/json), check against the schema, resolve `uses`.

The only package that imports yaml and jsonschema; everything downstream sees frozen specs.
"""
