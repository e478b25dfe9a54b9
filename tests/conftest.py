"""Options shared by the test suites (pytest only reads pytest_addoption from top-level conftests)."""


def pytest_addoption(parser):
    parser.addoption(
        "--role",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="tests/host: which layers to expect (auto: GPU layers when the host has an NVIDIA PCI device)",
    )
