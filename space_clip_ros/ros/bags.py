"""rosbag2 recordings (mcap or sqlite3) read and written with the ``rosbags`` library from PyPI (no rosbag2 install).

:class:`BagReader` is the one reader: topics, counts, raw CDR messages in recorded order, and messages decoded by
rosbags' own type store (no rclpy needed: space-clip-bag2dataset). :class:`Recording` (the player's) makes real
rclpy messages of the same bytes through ``rclpy.serialization``, so every field, the header stamps included, is
what was recorded; :class:`RecordingWriter` serializes rclpy messages the same way.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class RecordingError(ValueError):
    """A recording that cannot be read or written as asked; the message says why and what to do."""


def _require_rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise RecordingError("reading or writing rosbag2 recordings needs the rosbags library: "
                             "pip install 'space_clip_ros[bags]' (or pip install rosbags)") from None


def rclpy_type(msgtype: str) -> Any:
    """The rclpy message class of a type name such as ``sensor_msgs/msg/Image``."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def is_recording(path: Path) -> bool:
    """A rosbag2 folder (with metadata.yaml) or one .mcap / .db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file()
                                                                       and path.suffix in (".mcap", ".db3"))


class BagReader:
    """A rosbag2 recording (a folder, or one .mcap / .db3 file): ``topics`` (topic -> type name), ``counts``,
    ``duration_ns``; raw messages in recorded order and their decoding by rosbags' type store."""

    def __init__(self, path: Path) -> None:
        _require_rosbags()
        from rosbags.rosbag2 import Reader
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"recording {self.path} does not exist")
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        try:
            with Reader(self.path) as reader:
                self.topics: Dict[str, str] = {c.topic: c.msgtype for c in reader.connections}
                self.counts: Dict[str, int] = {}
                for c in reader.connections:
                    self.counts[c.topic] = self.counts.get(c.topic, 0) + c.msgcount
                self.duration_ns = reader.duration
        except Exception as error:  # rosbags raises several types for damaged or foreign files
            raise RecordingError(f"cannot read {self.path} as a rosbag2 recording (mcap or sqlite3): "
                                 f"{error}") from None

    def listing(self) -> str:
        return ", ".join(f"{t} ({m}, {self.counts[t]} messages)" for t, m in sorted(self.topics.items())) or "none"

    def require(self, topic: str, types: Sequence[str], what: str) -> str:
        """The type of ``topic``, which must be one of ``types`` and hold messages (``what``: its option)."""
        if topic not in self.topics:
            raise RecordingError(f"{self.path} has no topic {topic} ({what}); its topics: {self.listing()}")
        if self.topics[topic] not in types:
            raise RecordingError(f"{topic} is {self.topics[topic]}, but {what} must be {' or '.join(types)}")
        if not self.counts[topic]:
            raise RecordingError(f"{topic} ({what}) has no messages in {self.path}")
        return self.topics[topic]

    def messages(self, topics: Sequence[str]) -> Iterator[Tuple[str, int, bytes]]:
        """(topic, recorded time in ns, raw CDR bytes) of ``topics`` in recorded order (none for no topics)."""
        from rosbags.rosbag2 import Reader

        if not [t for t in topics if t]:
            return
        try:
            with Reader(self.path) as reader:
                wanted = [c for c in reader.connections if c.topic in topics]
                for connection, timestamp, raw in reader.messages(connections=wanted):
                    yield connection.topic, timestamp, raw
        except Exception as error:
            raise RecordingError(f"{self.path} could not be read to the end (truncated or damaged?): "
                                 f"{type(error).__name__}: {error}") from None

    def decode(self, raw: bytes, msgtype: str) -> Any:
        """A message as rosbags' type store reads it (the fields of the ROS message, no rclpy)."""
        return self.typestore.deserialize_cdr(raw, msgtype)


class Recording:
    """The image and camera_info messages of a recording as rclpy messages, in recorded order, for the player.

    ``image_topic`` / ``info_topic``: the topics to play ('' picks the only Image or CompressedImage topic, and the
    CameraInfo topic beside it: ``.../camera_info`` of the same namespace, else the only CameraInfo topic).
    """

    def __init__(self, path: Path, image_topic: str = "", info_topic: str = ""):
        self.bag = bag = BagReader(path)
        self.path, self.duration_ns = bag.path, bag.duration_ns
        images = sorted(t for t, m in bag.topics.items() if m in IMAGE_TYPES)
        infos = sorted(t for t, m in bag.topics.items() if m == INFO_TYPE)
        listing = bag.listing()
        if image_topic:
            if image_topic not in images:
                raise RecordingError(f"{self.path} has no image topic {image_topic}; its topics: {listing}")
        elif len(images) == 1:
            image_topic = images[0]
        else:
            raise RecordingError(f"{self.path} has {len(images)} image topics: set image_topic to one of them "
                                 f"(topics: {listing})")
        if info_topic:
            if info_topic not in infos:
                raise RecordingError(f"{self.path} has no camera_info topic {info_topic}; its topics: {listing}")
        else:
            beside = image_topic.rsplit("/", 1)[0] + "/camera_info"
            if image_topic.endswith("/compressed"):
                beside = image_topic.rsplit("/", 2)[0] + "/camera_info"
            info_topic = beside if beside in infos else (infos[0] if len(infos) == 1 else "")
        self.image_topic, self.info_topic = image_topic, info_topic
        self.image_type = rclpy_type(bag.topics[image_topic])
        self.frames = bag.counts[image_topic]

    def messages(self) -> Iterator[Tuple[str, int, Any]]:
        """(``"image"`` or ``"camera_info"``, recorded time in ns, the rclpy message) in recorded order."""
        from rclpy.serialization import deserialize_message

        info_type = rclpy_type(INFO_TYPE)
        for topic, timestamp, raw in self.bag.messages([self.image_topic, self.info_topic]):
            if topic == self.image_topic:
                yield "image", timestamp, deserialize_message(bytes(raw), self.image_type)
            else:
                yield "camera_info", timestamp, deserialize_message(bytes(raw), info_type)


class RecordingWriter:
    """Writes rclpy messages (or their serialized bytes) to a new rosbag2 recording, mcap (default) or sqlite3."""

    def __init__(self, path: Path, storage: str = "mcap"):
        _require_rosbags()
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise RecordingError(f"storage must be mcap or sqlite3, got {storage!r}")
        if Path(path).exists():
            raise RecordingError(f"{path} exists: rosbag2 writes a new folder")
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.writer = Writer(Path(path), version=8, storage_plugin=plugins[storage])
        self.writer.open()
        self.connections: Dict[str, Any] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self.connections:
            self.connections[topic] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)

    def write(self, topic: str, timestamp_ns: int, message: Any) -> None:
        from rclpy.serialization import serialize_message

        data = message if isinstance(message, (bytes, bytearray, memoryview)) else serialize_message(message)
        self.writer.write(self.connections[topic], int(timestamp_ns), bytes(data))

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def topic_type(node: Any, topic: str) -> Optional[str]:
    """The type name of ``topic`` as the graph knows it now (None when nobody publishes it yet)."""
    for name, types in node.get_topic_names_and_types():
        if name == topic and types:
            return types[0]
    return None
