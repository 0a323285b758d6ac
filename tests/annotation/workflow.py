"""Helpers of the annotation-workflow tests: images without blobs, masks as RLE and PNG,
members with a role, and running calls in threads with their own database connections."""

import base64
import io
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from django.contrib.auth.models import User
from django.db import connection
from PIL import Image as PilImage
from pycocotools import mask as mask_utils

from annotation.models import Image, Project
from annotation.services.projects import membership_set

H, W = 30, 40


def make_images(project: Project, count: int, *, height: int = H, width: int = W) -> list[Image]:
    """``count`` image rows of ``project`` (no blob behind them: the workflow never reads it)."""
    start = Image.objects.count()
    return [
        Image.objects.create(
            project=project,
            blob_key=f"images/{project.pk}-{start + n:060d}",
            sha256=f"{project.pk:04d}{start + n:060d}",
            width=width,
            height=height,
            format="PNG",
            byte_size=100,
        )
        for n in range(count)
    ]


def member(project: Project, username: str, role: str) -> User:
    user = User.objects.create_user(username, password=f"{username}-pass-123")
    membership_set(project=project, user=user, role=role)
    return user


def square(y0: int = 5, y1: int = 15, x0: int = 10, x1: int = 30) -> np.ndarray:
    pixels = np.zeros((H, W), dtype=bool)
    pixels[y0:y1, x0:x1] = True
    return pixels


def rle_of(pixels: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(pixels.astype(np.uint8)))
    return {"size": list(pixels.shape), "counts": encoded["counts"].decode("ascii")}


def png_of(pixels: np.ndarray, *, mode: str = "1") -> str:
    """Base64 PNG: mode "1" (1-bit) or "L" (8-bit, 0/255)."""
    picture = (
        PilImage.fromarray(pixels.astype(bool))
        if mode == "1"
        else PilImage.fromarray(pixels.astype(np.uint8) * 255)
    )
    assert picture.mode == mode
    out = io.BytesIO()
    picture.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def decoded(counts: str, *, height: int = H, width: int = W) -> np.ndarray:
    rle = {"size": [height, width], "counts": counts.encode()}
    return mask_utils.decode(rle).astype(bool)


def run_together(calls: Sequence[Callable[[], Any]], *, timeout: float = 60) -> list[Any]:
    """Run each call in its own thread, all released at once; each thread has its own
    database connection (closed at the end). Returns results in order; re-raises errors."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def worker(index: int, call: Callable[[], Any]) -> None:
        try:
            barrier.wait(timeout=timeout)
            results[index] = call()
        except BaseException as exc:  # handed to the test thread below
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=worker, args=(index, call)) for index, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if errors:
        raise errors[0]
    return results
