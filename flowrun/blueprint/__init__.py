"""File -> Graph: load (yaml/json), check against the schema, expand batches, resolve `uses`.

The only package that imports yaml and jsonschema; everything downstream sees frozen specs.
"""
