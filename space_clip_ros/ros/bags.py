"""rosbag2 recordings (mcap or sqlite3) read and written with the ``rosbags`` library from PyPI (no rosbag2 install).

Messages keep their serialized CDR bytes from the file and become real rclpy messages through
``rclpy.serialization`` (so every field, the header stamps included, is what was recorded); written ones are
serialized the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

#: The message types a recording can feed the node with.
TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage,
         "sensor_msgs/msg/CameraInfo": CameraInfo}


class RecordingError(ValueError):
    pass


def _require_rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError:
        raise RecordingError("reading or writing rosbag2 recordings needs the rosbags library: "
                             "pip install 'space_clip_ros[bags]' (or pip install rosbags)") from None


def is_recording(path: Path) -> bool:
    """A rosbag2 folder (with metadata.yaml) or one .mcap / .db3 file."""
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (path.is_file()
                                                                       and path.suffix in (".mcap", ".db3"))


class Recording:
    """The image and camera_info messages of a rosbag2 recording, in recorded order.

    ``image_topic`` / ``info_topic``: the topics to play ('' picks the only Image or CompressedImage topic, and the
    CameraInfo topic beside it: ``.../camera_info`` of the same namespace, else the only CameraInfo topic).
    """

    def __init__(self, path: Path, image_topic: str = "", info_topic: str = ""):
        _require_rosbags()
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"recording {self.path} does not exist")
        try:
            with Reader(self.path) as reader:
                topics = {c.topic: c.msgtype for c in reader.connections}
                self.duration_ns = reader.duration
                self.counts = {c.topic: c.msgcount for c in reader.connections}
        except Exception as error:  # rosbags raises several types for damaged or foreign files
            raise RecordingError(f"cannot read {self.path} as a rosbag2 recording: {error}") from None
        images = sorted(t for t, m in topics.items() if m in ("sensor_msgs/msg/Image",
                                                               "sensor_msgs/msg/CompressedImage"))
        infos = sorted(t for t, m in topics.items() if m == "sensor_msgs/msg/CameraInfo")
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "none"
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
        self.image_type = TYPES[topics[image_topic]]
        self.frames = self.counts[image_topic]

    def messages(self) -> Iterator[Tuple[str, int, Any]]:
        """(``"image"`` or ``"camera_info"``, recorded time in ns, the rclpy message) in recorded order."""
        from rosbags.rosbag2 import Reader

        with Reader(self.path) as reader:
            wanted = [c for c in reader.connections if c.topic in (self.image_topic, self.info_topic)]
            for connection, timestamp, raw in reader.messages(connections=wanted):
                if connection.topic == self.image_topic:
                    yield "image", timestamp, deserialize_message(bytes(raw), self.image_type)
                else:
                    yield "camera_info", timestamp, deserialize_message(bytes(raw), CameraInfo)


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
        data = message if isinstance(message, (bytes, bytearray, memoryview)) else serialize_message(message)
        self.writer.write(self.connections[topic], int(timestamp_ns), bytes(data))

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> "RecordingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_topics(path: Path, topics: Sequence[str] = ()) -> List[Tuple[str, int, Any]]:
    """Every message of ``topics`` (all when empty) of a recording as (topic, recorded ns, rclpy message), for
    tools and tests; only the sensor_msgs types in :data:`TYPES` and the others rclpy can import are decoded."""
    _require_rosbags()
    import importlib

    from rosbags.rosbag2 import Reader

    out = []
    with Reader(Path(path)) as reader:
        wanted = [c for c in reader.connections if not topics or c.topic in topics]
        for connection, timestamp, raw in reader.messages(connections=wanted):
            msg_type = TYPES.get(connection.msgtype)
            if msg_type is None:
                package, _, name = connection.msgtype.split("/")
                msg_type = getattr(importlib.import_module(f"{package}.msg"), name)
            out.append((connection.topic, timestamp, deserialize_message(bytes(raw), msg_type)))
    return out


def topic_type(node: Any, topic: str) -> Optional[str]:
    """The type name of ``topic`` as the graph knows it now (None when nobody publishes it yet)."""
    for name, types in node.get_topic_names_and_types():
        if name == topic and types:
            return types[0]
    return None
