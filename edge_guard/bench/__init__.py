"""`edge-guard bench`: labels/s of the ways to classify many texts, side by side, vs a roofline."""
