"""twistd plugin: ``twistd chatd``. Importing this module imports nothing heavy."""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A multi-room chat server (telnet and the bundled 'chat' client).",
    "chatd",
)
