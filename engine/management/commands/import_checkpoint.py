"""``manage.py import_checkpoint PROJECT PATH [--arch vit_b] [--name NAME] [--deploy]``."""

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from annotation.errors import DomainError
from annotation.management.commands._lookup import project_from_ref
from engine.sam.config import CONFIGS
from engine.services.registry import model_version_import


class Command(BaseCommand):
    help = (
        "Import a SAM checkpoint (an official sam_vit_{b,l,h}_*.pth or one of ours) into a "
        "project: the file is validated, stored as a blob, its ONNX decoder exported, and a "
        "model version registered. The architecture is detected unless --arch is given."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("project", help="project name or id")
        parser.add_argument("path", help="the checkpoint file")
        parser.add_argument(
            "--arch", choices=sorted(CONFIGS), help="expected architecture (checked)"
        )
        parser.add_argument("--name", default="", help="display name (default: the file name)")
        parser.add_argument(
            "--deploy", action="store_true", help="deploy the version in the project"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = project_from_ref(options["project"])
        path = Path(options["path"]).expanduser()
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        try:
            version = model_version_import(
                project=project,
                path_or_file=path,
                arch=options["arch"],
                name=options["name"],
                deploy=options["deploy"],
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        onnx = version.metrics.get("onnx_decoder") or {}
        deployed = " (deployed)" if options["deploy"] else ""
        self.stdout.write(
            f"model version {version.pk}: {version.arch} sha256 {version.sha256} in project "
            f"{project.name!r}{deployed}\n"
            f"  checkpoint {version.checkpoint_key}\n"
            f"  onnx decoder {version.onnx_decoder_key} (max |diff| vs torch: iou "
            f"{onnx.get('max_abs_diff_iou', float('nan')):.2e}, low-res logits "
            f"{onnx.get('max_abs_diff_low_res_logits', float('nan')):.2e})"
        )
