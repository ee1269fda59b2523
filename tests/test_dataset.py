"""Episode shards (round trip, atomic writes, bad files) and the loader (shards + rosbag2 bags)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from liquid_control.learning import dataset as ds
from liquid_control.learning.dataset import (DatasetError, EpisodeData, episode_from_bag, list_shards, load_episodes,
                                             read_shard, shard_name, split_episodes, write_shard)


def make_episode(n: int = 12, height: int = 12, width: int = 16, seed: int = 0, t0: float = 0.0) -> EpisodeData:
    rng = np.random.default_rng(seed)
    return EpisodeData(
        images=rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8),
        capture_times_s=t0 + np.arange(n) / 30.0,
        labels=rng.normal(size=(n, 4)).astype(np.float32),
        commands=rng.normal(size=(n, 4)).astype(np.float32),
        positions=rng.normal(size=(n, 3)), yaws=rng.normal(size=n), velocities_body=rng.normal(size=(n, 3)),
        targets=rng.normal(size=(n, 3)),
        meta={"scenario": "synthetic", "seed": seed, "metrics": {"success": True, "final_distance_m": 0.9}})


def test_shard_round_trip_keeps_every_array_and_meta(tmp_path):
    episode = make_episode()
    path = write_shard(tmp_path / shard_name("synthetic", 7), episode)
    assert path.name == "synthetic_000007.npz"
    loaded = read_shard(path)
    assert loaded.images.dtype == np.uint8
    np.testing.assert_array_equal(loaded.images, episode.images)
    np.testing.assert_array_equal(loaded.capture_times_s, episode.capture_times_s)  # float64 kept exactly
    for key in ("labels", "commands", "positions", "yaws", "velocities_body", "targets"):
        np.testing.assert_allclose(getattr(loaded, key), getattr(episode, key), rtol=1e-6, atol=1e-6)
    assert loaded.meta["scenario"] == "synthetic" and loaded.meta["metrics"]["final_distance_m"] == 0.9
    assert loaded.meta["format"] == ds.FORMAT and loaded.meta["name"] == "synthetic_000007"


def test_missing_state_is_stored_as_nan(tmp_path):
    episode = make_episode()
    bare = EpisodeData(images=episode.images, capture_times_s=episode.capture_times_s, labels=episode.labels)
    loaded = read_shard(write_shard(tmp_path / "bare.npz", bare))
    assert np.isnan(loaded.positions).all() and loaded.positions.shape == (12, 3)
    np.testing.assert_array_equal(loaded.commands, loaded.labels)  # no flown command: the label was flown


def test_failed_write_leaves_no_shard_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a_000000.npz"

    def crash(handle, **arrays):  # half the bytes, then the process "dies"
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ds.np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        write_shard(target, make_episode())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_leftover_temp_files_are_never_listed_and_bad_shards_are_named(tmp_path):
    write_shard(tmp_path / "good_000000.npz", make_episode())
    (tmp_path / ".good_000001.npz.tmp1234").write_bytes(b"half a zip")  # a killed writer's leftover
    (tmp_path / ".hidden.npz").write_bytes(b"x")
    assert [p.name for p in list_shards(tmp_path)] == ["good_000000.npz"]
    truncated = tmp_path / "trunc_000000.npz"
    truncated.write_bytes((tmp_path / "good_000000.npz").read_bytes()[:200])
    with pytest.raises(DatasetError, match="trunc_000000.npz.*unreadable"):
        read_shard(truncated)
    (tmp_path / "collection.json").write_text('{"episodes": 3}')  # not a shard at all: said so, not "pickled"
    with pytest.raises(DatasetError, match="collection.json: not an .npz archive"):
        read_shard(tmp_path / "collection.json")
    with pytest.raises(DatasetError, match="missing.npz: unreadable"):
        read_shard(tmp_path / "missing.npz")


def test_invalid_episodes_are_refused_with_the_problem_named(tmp_path):
    episode = make_episode()
    episode.capture_times_s[5] = episode.capture_times_s[4]
    with pytest.raises(DatasetError, match="capture times must increase"):
        write_shard(tmp_path / "x.npz", episode)
    episode = make_episode()
    episode.labels[0, 0] = np.nan
    with pytest.raises(DatasetError, match="labels"):
        write_shard(tmp_path / "x.npz", episode)
    with pytest.raises(DatasetError, match="must end in .npz"):
        write_shard(tmp_path / "x.bin", make_episode())
    np.savez(tmp_path / "foreign.npz", images=np.zeros(3))
    with pytest.raises(DatasetError, match="missing arrays"):
        read_shard(tmp_path / "foreign.npz")


def test_load_episodes_resizes_and_splits_by_episode(tmp_path):
    for seed in range(5):
        write_shard(tmp_path / shard_name("s", seed), make_episode(seed=seed, height=24, width=32))
    episodes = load_episodes([tmp_path], height=12, width=16)
    assert len(episodes) == 5 and all(e.images.shape[1:] == (12, 16, 3) for e in episodes)
    expected = cv2.resize(read_shard(tmp_path / "s_000000.npz").images[0], (16, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(episodes[0].images[0], expected)
    train, val = split_episodes(episodes, 0.4, seed=3)
    assert len(train) == 3 and len(val) == 2
    assert {e.name for e in train}.isdisjoint({e.name for e in val})
    again, _ = split_episodes(episodes, 0.4, seed=3)
    assert [e.name for e in again] == [e.name for e in train]  # seeded
    with pytest.raises(DatasetError, match="does not exist"):
        load_episodes([tmp_path / "nope"], 12, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .npz shards and no rosbag2 bags"):
        load_episodes([tmp_path / "empty"], 12, 16)


# --------------------------------------------------------------------------- rosbag2
def _write_bag(path, images, image_stamps_ns, commands, command_stamps_ns, image_topic="/camera/image_raw",
               command_topic="/cmd_vel"):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types

    def header(ns, frame):
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                        frame_id=frame)

    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        image_conn = writer.add_connection(image_topic, "sensor_msgs/msg/Image", typestore=store)
        command_conn = writer.add_connection(command_topic, "geometry_msgs/msg/TwistStamped", typestore=store)
        # An unrelated image topic that must not be picked when the topic is named.
        other = writer.add_connection("/debug/overlay", "sensor_msgs/msg/Image", typestore=store)
        events = [(s, "image", i) for i, s in enumerate(image_stamps_ns)] + \
                 [(s, "command", i) for i, s in enumerate(command_stamps_ns)]
        for stamp, kind, i in sorted(events):
            if kind == "image":
                h, w, _ = images[i].shape
                bgr = images[i][:, :, ::-1]  # stored as bgr8: the loader must give RGB back
                msg = T["sensor_msgs/msg/Image"](header=header(stamp, "camera"), height=h, width=w, encoding="bgr8",
                                                 is_bigendian=0, step=3 * w,
                                                 data=np.ascontiguousarray(bgr).reshape(-1))
                data = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
                writer.write(image_conn, stamp + 1000, data)
                writer.write(other, stamp + 2000, data)
            else:
                v = T["geometry_msgs/msg/Vector3"]
                c = commands[i]
                twist = T["geometry_msgs/msg/Twist"](linear=v(x=c[0], y=c[1], z=c[2]), angular=v(x=0.0, y=0.0, z=c[3]))
                msg = T["geometry_msgs/msg/TwistStamped"](header=header(stamp, "base_link"), twist=twist)
                writer.write(command_conn, stamp + 500, store.serialize_cdr(msg, "geometry_msgs/msg/TwistStamped"))


def test_rosbag_recording_loads_as_an_episode(tmp_path):
    rng = np.random.default_rng(1)
    base = 1_700_000_000 * 10**9
    period = 10**9 // 30
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(6)]
    image_stamps = [base + k * period for k in (0, 1, 2, 4, 5, 12)]  # frame 3 dropped; the last has no command
    commands = [np.array([0.1 * k, -0.05 * k, 0.01 * k, 0.2 * k]) for k in range(7)]
    command_stamps = [base + k * period + 2_000_000 for k in range(7)]  # 2 ms after each frame slot
    bag = tmp_path / "flight"
    _write_bag(bag, images, image_stamps, commands, command_stamps)

    episode = episode_from_bag(bag, image_topic="/camera/image_raw", command_topic="/cmd_vel", height=12, width=16)
    assert len(episode) == 5  # the image at slot 12 is 0.27 s from any command: left out
    np.testing.assert_allclose(episode.capture_times_s, np.array([0, 1, 2, 4, 5]) * period / 1e9, atol=1e-9)
    np.testing.assert_allclose(episode.labels, np.stack([commands[k] for k in (0, 1, 2, 4, 5)]), atol=1e-6)
    expected = cv2.resize(images[3], (16, 12), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(episode.images[3], expected)  # RGB back from bgr8, resized like preprocess
    assert episode.meta["image_topic"] == "/camera/image_raw" and episode.meta["source"] == "rosbag2"

    # Through the generic loader (a directory of bags) and with auto-detected topics.
    loaded = load_episodes([tmp_path], height=12, width=16, image_topic="/camera/image_raw")
    assert len(loaded) == 1 and len(loaded[0]) == 5
    with pytest.raises(DatasetError, match="no image has a command within"):
        episode_from_bag(bag, image_topic="/camera/image_raw", height=12, width=16, max_command_gap_s=0.001)
    with pytest.raises(DatasetError, match="not in bag"):
        episode_from_bag(bag, image_topic="/nope", height=12, width=16)


def test_shard_meta_is_json_not_pickle(tmp_path):
    path = write_shard(tmp_path / "m.npz", make_episode())
    with np.load(path, allow_pickle=False) as data:  # would raise if anything needed pickle
        assert json.loads(str(data["meta"]))["format_version"] == ds.FORMAT_VERSION
