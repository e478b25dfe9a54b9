"""SAM 2 test support shared by tests/sam2 and bench/: the real SAM 2.1 model built from its packaged config with
random weights, the CPU torchvision shim, and Nuclio-shaped contexts and events for our functions."""
