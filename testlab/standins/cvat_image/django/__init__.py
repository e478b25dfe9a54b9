"""TEST STAND-IN (labforge test stand-in): the part of Django's API labforge's CVAT queries use, over a JSON file."""
