"""One router per resource of the fleet API."""
