#!/usr/bin/env python3
"""An independent reader of .appv packages, sharing no code with Avail.

Uses only Python's zipfile (for the central directory and the CRC test), zlib
(raw inflate) and hashlib. For every file in AppxBlockMap.xml it checks the local
header length (LfhSize), cuts the entry's data into blocks by the block map's
sizes, inflates every block *on its own* with a fresh raw-deflate decompressor,
and checks each block's length and SHA-256. It also checks that the zip and the
block map list the same payload files. Prints a JSON summary; exits 1 on any
mismatch.
"""

import base64
import hashlib
import json
import struct
import sys
import urllib.parse
import xml.etree.ElementTree as ET
import zipfile
import zlib

BLOCK = 65536
NS = "{http://schemas.microsoft.com/appx/2010/blockmap}"
FOOTPRINT = {"AppxBlockMap.xml", "[Content_Types].xml", "AppxSignature.p7x", "AppxMetadata/CodeIntegrity.cat"}


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


def main(path):
    zf = zipfile.ZipFile(path)
    bad = zf.testzip()
    if bad is not None:
        fail(f"zipfile CRC test failed on {bad}")
    infos = {}
    for info in zf.infolist():
        name = info.filename if info.filename in FOOTPRINT else urllib.parse.unquote(info.filename)
        infos[name] = info
    root = ET.fromstring(zf.read("AppxBlockMap.xml"))
    if root.get("HashMethod") != "http://www.w3.org/2001/04/xmlenc#sha256":
        fail("unexpected HashMethod")
    raw = open(path, "rb").read()
    files = blocks = deflated_blocks = stored_blocks = 0
    listed = set()
    for f in root.findall(NS + "File"):
        name = f.get("Name").replace("\\", "/")
        listed.add(name)
        info = infos.get(name)
        if info is None:
            fail(f"{name} is in the block map but not in the zip")
        size, lfh_size = int(f.get("Size")), int(f.get("LfhSize"))
        if size != info.file_size:
            fail(f"{name}: block map size {size} != zip size {info.file_size}")
        sig, = struct.unpack_from("<I", raw, info.header_offset)
        name_len, extra_len = struct.unpack_from("<HH", raw, info.header_offset + 26)
        if sig != 0x04034B50 or 30 + name_len + extra_len != lfh_size:
            fail(f"{name}: LfhSize {lfh_size} does not match the local header")
        pos = info.header_offset + lfh_size
        block_elems = f.findall(NS + "Block")
        if len(block_elems) != (size + BLOCK - 1) // BLOCK:
            fail(f"{name}: wrong number of blocks")
        for k, b in enumerate(block_elems):
            want = min(BLOCK, size - k * BLOCK)
            if info.compress_type == zipfile.ZIP_DEFLATED:
                clen = int(b.get("Size"))
                d = zlib.decompressobj(-15)
                data = d.decompress(raw[pos:pos + clen])
                if d.unconsumed_tail:
                    fail(f"{name} block {k}: input left over")
                deflated_blocks += 1
            else:
                clen = want
                data = raw[pos:pos + clen]
                stored_blocks += 1
            pos += clen
            if len(data) != want:
                fail(f"{name} block {k}: {len(data)} bytes, expected {want}")
            if base64.b64encode(hashlib.sha256(data).digest()).decode() != b.get("Hash"):
                fail(f"{name} block {k}: hash mismatch")
            blocks += 1
        files += 1
    payload = {n for n in infos if n not in FOOTPRINT}
    if payload != listed:
        fail(f"zip and block map differ: {sorted(payload ^ listed)}")
    print(json.dumps({"ok": True, "files": files, "blocks": blocks,
                      "deflated_blocks": deflated_blocks, "stored_blocks": stored_blocks}))


if __name__ == "__main__":
    main(sys.argv[1])
