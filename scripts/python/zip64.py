"""Rewrite a torch.save zip archive into ZIP64 form, for the checkpoint reader's tests.

Every size and offset moves into zip64 extra fields (central and local headers), after an
unknown extra field that a reader must step over, and the archive ends with the ZIP64
end-of-central-directory record and locator. The data offsets stay where they were, so the
tensors read back the same: torch.load opens the result too.
"""
import struct


def zip64ify(src, dst):
    """Writes the ZIP64 form of archive `src` to `dst` and returns `dst`."""
    raw = bytearray(open(src, "rb").read())
    eocd = len(raw) - 22
    assert raw[eocd:eocd + 4] == b"PK\x05\x06"
    count, cd_size, cd_offset = struct.unpack("<HII", raw[eocd + 10:eocd + 20])
    cd, pos = bytearray(), cd_offset
    for _ in range(count):
        h = bytearray(raw[pos:pos + 46])
        name_len, extra_len, comment_len = struct.unpack("<HHH", h[28:34])
        tail = raw[pos + 46:pos + 46 + name_len + extra_len + comment_len]
        name, extra, comment = tail[:name_len], tail[name_len:name_len + extra_len], tail[name_len + extra_len:]
        compressed, uncompressed = struct.unpack("<II", h[20:28])
        local = struct.unpack("<I", h[42:46])[0]
        h[4:8] = struct.pack("<HH", 45, 45)
        h[20:28] = b"\xff" * 8
        h[42:46] = b"\xff" * 4
        # an unknown extra first, so readers must walk the list to find 0x0001
        new_extra = struct.pack("<HH", 0xCAFE, 3) + b"xyz" + extra + struct.pack("<HHQQQ", 1, 24, uncompressed, compressed, local)
        h[30:32] = struct.pack("<H", len(new_extra))
        cd += h + name + new_extra + comment
        # In the local header, swap torch's padding for zip64 extra + shorter padding: same length, same data offset.
        lname, lextra = struct.unpack("<HH", raw[local + 26:local + 30])
        if lextra >= 24:
            raw[local + 18:local + 26] = b"\xff" * 8
            raw[local + 30 + lname:local + 30 + lname + lextra] = (
                struct.pack("<HHQQ", 1, 16, uncompressed, compressed) + struct.pack("<HH", 0x4246, lextra - 24) + b"Z" * (lextra - 24))
        pos += 46 + len(tail)
    out = raw[:cd_offset] + cd
    end64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, len(cd), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    open(dst, "wb").write(out)
    return dst
