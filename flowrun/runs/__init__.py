"""Past runs, read from their store: `show` (text and JSON), `html` (one page), `clean`."""
