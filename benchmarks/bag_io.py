"""Bag I/O figures: BagWriter vs rosbags' Writer, BagReader image decoding, evaluate-bag speed.

    .venv/bin/python benchmarks/bag_io.py [--frames 2000]

Baselines are measured in the same run: rosbags' MCAP Writer (which buffers a
1 MiB chunk and cannot flush in between) for writing, and rosbags' AnyReader +
deserialize_cdr without image conversion for reading. One thread throughout.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import bag_fixtures as bf  # noqa: E402
from liquid_control.bags.reader import BagReader  # noqa: E402
from liquid_control.bags.writer import BagWriter, BagWriterConfig  # noqa: E402


def image_payloads(frames: int, height: int, width: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    out = []
    for i in range(frames):
        msg, _ = bf.image_msg(i, np.roll(base, i, axis=1), "rgb8")
        out.append(bytes(bf.TYPESTORE.serialize_cdr(msg, bf.IMAGE)))
    return out


def bench_write(root: Path, payloads: list[bytes], period_ns: int) -> dict[str, float]:
    """Seconds per message appended (flushes excluded; see bench_flush)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    results = {}
    start = time.perf_counter()
    with Writer(root / "rosbags", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/camera/image_raw", bf.IMAGE, typestore=bf.TYPESTORE)
        for i, data in enumerate(payloads):
            writer.write(connection, i * period_ns, data)
    results["rosbags Writer (baseline)"] = (time.perf_counter() - start) / len(payloads)
    for compression in ("none", "zstd"):
        with BagWriter(root / f"ours_{compression}", BagWriterConfig(compression=compression, flush_period_s=1e9),
                       clock=lambda: 0.0) as writer:
            writer.add_topic("/camera/image_raw", bf.IMAGE)
            start = time.perf_counter()
            for i, data in enumerate(payloads):
                writer.write("/camera/image_raw", i * period_ns, data)
            # Closing the chunks (compression happens here) is part of the per-message cost.
            writer.flush()
            results[f"BagWriter {compression}"] = (time.perf_counter() - start) / len(payloads)
    return results


def bench_flush(root: Path, payload: bytes, per_flush: int, repeats: int = 20) -> dict[str, float]:
    """Seconds per periodic flush (chunk close + metadata.yaml), with and without fsync."""
    results = {}
    for fsync in (False, True):
        with BagWriter(root / f"flush_{fsync}", BagWriterConfig(flush_period_s=1e9, fsync=fsync),
                       clock=lambda: 0.0) as writer:
            for topic in ("/camera/image_raw", "/cmd_vel", "/odom", "/features", "/clock"):
                writer.add_topic(topic, bf.IMAGE)
            spent = 0.0
            for r in range(repeats):
                for i in range(per_flush):
                    writer.write("/camera/image_raw", r * per_flush + i, payload)
                start = time.perf_counter()
                writer.flush()
                spent += time.perf_counter() - start
        results[f"flush, fsync={fsync}"] = spent / repeats
    return results


def bench_read(bag: Path) -> dict[str, float]:
    from rosbags.highlevel import AnyReader

    results = {}
    start = time.perf_counter()
    with AnyReader([bag]) as reader:
        for connection, _, raw in reader.messages():
            reader.deserialize(raw, connection.msgtype)
    results["rosbags AnyReader + deserialize (baseline)"] = time.perf_counter() - start
    start = time.perf_counter()
    with BagReader(bag) as reader:
        for _ in reader.images():
            pass
    results["BagReader.images() rgb8 -> RGB"] = time.perf_counter() - start
    return results


def jpeg_bag(root: Path, frames: int) -> Path:
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8), (9, 9), 3)
    entries = []
    for i in range(frames):
        msg, _ = bf.compressed_msg(i, np.roll(base, i, axis=1), "jpeg")
        entries.append(bf.Entry("/camera/image_raw/compressed", bf.COMPRESSED, i * 33_333_333, msg))
    return bf.write_rosbags_bag(root / "jpeg", entries)


def bench_evaluate(root: Path, frames: int) -> dict[str, float]:
    from liquid_control.evaluation.bag import evaluate_bag
    from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
    from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
    from liquid_control.models.policy import PolicyConfig, PolicyModel

    torch.manual_seed(0)
    perception, policy = FeatureExtractor(PerceptionConfig()).eval(), PolicyModel(PolicyConfig()).eval()
    entries = []
    for i in range(frames):
        stamp = i * 33_333_333
        msg, _ = bf.image_msg(stamp, bf.random_rgb(96, 128, seed=i), "rgb8")
        entries.append(bf.Entry("/camera/image_raw", bf.IMAGE, stamp, msg))
        entries.append(bf.Entry("/cmd_vel", bf.TWIST_STAMPED, stamp + 1_000_000,
                                bf.twist_stamped_msg(stamp, [0.5, 0.0, 0.0, 0.1])))
    bag = bf.write_rosbags_bag(root / "evaluate", entries)
    results = {}
    for backend in ("torch", "onnxruntime"):
        runtimes = PerceptionRuntime(perception, backend=backend), PolicyRuntime(policy, backend=backend)
        evaluation = evaluate_bag(bag, *runtimes)
        results[f"evaluate-bag {backend} (128x96, default models)"] = evaluation.processing_s
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    root = Path(tempfile.mkdtemp(prefix="bag_bench_"))
    try:
        for height, width in ((48, 64), (480, 640)):
            frames = args.frames if height < 100 else args.frames // 10
            payloads = image_payloads(frames, height, width)
            size_mb = sum(map(len, payloads)) / 1e6
            print(f"\n{frames} Image rgb8 {width}x{height} ({size_mb:.1f} MB)")
            sub = root / f"{width}x{height}"
            sub.mkdir()
            write = bench_write(sub, payloads, 33_333_333)
            baseline = write["rosbags Writer (baseline)"]
            for name, seconds in write.items():
                print(f"  write {name:38s} {seconds * 1e6:9.1f} us/msg {size_mb / frames / seconds:8.1f} MB/s "
                      f"x{baseline / seconds:.2f} vs baseline")
            for name, seconds in bench_flush(sub, payloads[0], per_flush=30).items():
                print(f"  {name:44s} {seconds * 1e3:9.2f} ms per flush (one per second when recording; "
                      f"30 frames per chunk)")
            read = bench_read(sub / "ours_none")
            baseline = read["rosbags AnyReader + deserialize (baseline)"]
            for name, seconds in read.items():
                print(f"  read  {name:38s} {frames / seconds:9.0f} msg/s x{baseline / seconds:.2f} vs baseline")
        frames = args.frames // 10
        bag = jpeg_bag(root, frames)
        start = time.perf_counter()
        with BagReader(bag) as reader:
            count = sum(1 for _ in reader.images())
        rate = count / (time.perf_counter() - start)
        print(f"\nBagReader.images() CompressedImage jpeg 640x480: {rate:.0f} frames/s")
        frames = min(args.frames // 4, 500)
        print(f"\nevaluate-bag over {frames} frames:")
        for name, seconds in bench_evaluate(root, frames).items():
            print(f"  {name:44s} {frames / seconds:7.0f} frames/s")
    finally:
        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
