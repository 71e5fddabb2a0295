"""Thumbnails of running VMs' screens, taken with libvirt's screenshot API: it works for VMs on
remote hosts, never connects to the console, and so never takes it from a user."""

from __future__ import annotations

import io

from django.core.cache import cache
from PIL import Image

from console.hypervisor import hypervisor_for
from console.models import VirtualMachine

THUMBNAIL_SIZE = (320, 240)
CACHE_SECONDS = 5  # a list open in several browsers asks libvirt once per VM and period


def vm_thumbnail(vm: VirtualMachine) -> bytes:
    """A small PNG of the VM's screen now (or a few seconds ago)."""
    key = f"vm-thumbnail:{vm.pk}"
    png = cache.get(key)
    if png is None:
        shot = hypervisor_for(vm.host).screenshot(vm.name)
        image = Image.open(io.BytesIO(shot))
        image.thumbnail(THUMBNAIL_SIZE)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG", optimize=True)
        png = out.getvalue()
        cache.set(key, png, CACHE_SECONDS)
    return png
