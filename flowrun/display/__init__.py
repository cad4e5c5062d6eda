"""Progress for people: the event record, plain lines, the live rich display. Sinks of events."""
