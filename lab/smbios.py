"""The firmware table a Hetzner Cloud server's hypervisor gives it: SMBIOS, as `dmidecode` reads it.

cloud-init's Hetzner datasource (and ds-identify) recognise Hetzner by the SMBIOS system
manufacturer and require the system serial number to be the server's id. This host's kernel
exposes no DMI (there is no /sys/class/dmi/id), so both fall back to `dmidecode`, which without
/sys/firmware/dmi scans the legacy BIOS area of /dev/mem (0xF0000-0xFFFFF) for an entry point.
`memory_image()` is that memory: an SMBIOS 2.8 entry point and its table, a System Information
structure (type 1) and the end-of-table marker (type 127), at the offsets dmidecode looks at.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

SCAN_START = 0xF0000  # where dmidecode starts looking for "_SM_", every 16 bytes
TABLE_ADDRESS = SCAN_START + 0x100
MEMORY_SIZE = 0x100000  # the first MiB: dmidecode maps the whole scan window
SMBIOS_VERSION = (2, 8)


@dataclass(frozen=True)
class SystemInformation:
    manufacturer: str
    product_name: str
    serial_number: str
    uuid: uuid.UUID


def _structure(kind: int, handle: int, formatted: bytes, strings: tuple[str, ...]) -> bytes:
    """One SMBIOS structure: header, formatted area, then its strings, ending in a double NUL."""
    text = b"".join(string.encode() + b"\0" for string in strings) + b"\0" if strings else b"\0\0"
    return struct.pack("<BBH", kind, 4 + len(formatted), handle) + formatted + text


def _checksummed(data: bytearray, at: int, start: int, end: int) -> None:
    """Set the byte at `at` so that data[start:end] sums to zero, as SMBIOS checksums do."""
    data[at] = 0
    data[at] = -sum(data[start:end]) & 0xFF


def structures(system: SystemInformation) -> tuple[bytes, ...]:
    """The structures of the table, in order."""
    # Strings are referred to by number from 1 in the order listed; 0 means "none".
    formatted = struct.pack(
        "<BBBB16sBBB",
        1,  # manufacturer
        2,  # product name
        0,  # version
        3,  # serial number
        system.uuid.bytes_le,  # SMBIOS 2.6+: the first three fields little-endian
        0x06,  # wake-up type: power switch
        0,  # SKU number
        0,  # family
    )
    strings = (system.manufacturer, system.product_name, system.serial_number)
    return _structure(1, 0x0100, formatted, strings), _structure(127, 0x7F00, b"", ())


def entry_point(table_length: int, count: int, largest: int) -> bytes:
    """The 31-byte SMBIOS 2.x entry point ("_SM_" with its "_DMI_" intermediate anchor)."""
    data = bytearray(31)
    data[0:4] = b"_SM_"
    data[5] = len(data)
    data[6], data[7] = SMBIOS_VERSION
    struct.pack_into("<H", data, 8, largest)
    data[16:21] = b"_DMI_"
    struct.pack_into("<HIH", data, 22, table_length, TABLE_ADDRESS, count)
    data[30] = SMBIOS_VERSION[0] << 4 | SMBIOS_VERSION[1]
    _checksummed(data, 21, 16, 31)
    _checksummed(data, 4, 0, 31)
    return bytes(data)


def memory_image(system: SystemInformation) -> bytes:
    """The machine's first MiB of memory as dmidecode reads it from /dev/mem."""
    parts = structures(system)
    table = b"".join(parts)
    point = entry_point(len(table), len(parts), largest=max(map(len, parts)))
    memory = bytearray(MEMORY_SIZE)
    memory[SCAN_START : SCAN_START + len(point)] = point
    memory[TABLE_ADDRESS : TABLE_ADDRESS + len(table)] = table
    return bytes(memory)
