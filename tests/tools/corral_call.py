"""Corral's plugin-call opcodes for an unmodified kazoo client: a request
class per opcode (4096 `call`, a recipe through the log; 4097 `query`) and
`call(client, plugin, args)`, which answers `(status, payload)`
(docs/plugins.md)."""

from collections import namedtuple

from kazoo.protocol.serialization import int_struct, read_buffer, write_buffer, write_string


class Call(namedtuple("Call", "plugin args")):
    """`ustring plugin, buffer args` in, `int status, buffer payload` out."""
    type = 4096

    def serialize(self):
        b = bytearray()
        b.extend(write_string(self.plugin))
        b.extend(write_buffer(self.args))
        return b

    @classmethod
    def deserialize(cls, data, offset):
        status = int_struct.unpack_from(data, offset)[0]
        payload, _ = read_buffer(data, offset + int_struct.size)
        return status, payload


class QueryCall(Call):
    type = 4097


def call(z, plugin, args, request=Call, timeout=10):
    result = z.handler.async_result()
    z._call(request(plugin, args), result)
    return result.get(timeout=timeout)
