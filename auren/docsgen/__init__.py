"""Documents generated from the code and checked in (``auren docs generate``)."""
