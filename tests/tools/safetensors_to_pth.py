"""Write a PyTorch-format checkpoint (.pth zip, pickle protocol 2) from a safetensors file,
without torch: the pickle names torch's classes exactly as torch.save does, so that loaders of
real checkpoints read it. Used by tests/checkpoint_pth.rs.

usage: safetensors_to_pth.py SRC.safetensors DST.pth [half] [--nested]
  half      store F32 tensors as float16 (HalfStorage)
  --nested  wrap the state_dict as {"state_dict": ...} (as training checkpoints do)
"""
import json, struct, zipfile, pickle, sys, collections, io
src, dst, half = sys.argv[1], sys.argv[2], 'half' in sys.argv[3:]
raw = open(src,'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
hdr = json.loads(raw[8:8+n]); body = raw[8+n:]
# fake torch classes so pickle writes the right GLOBALs
import types
torch = types.ModuleType('torch'); utils = types.ModuleType('torch._utils')
class FloatStorage: pass
class HalfStorage: pass
class LongStorage: pass
FloatStorage.__module__='torch'; HalfStorage.__module__='torch'; LongStorage.__module__='torch'
torch.FloatStorage=FloatStorage; torch.HalfStorage=HalfStorage; torch.LongStorage=LongStorage
def _rebuild_tensor_v2(*a): pass
_rebuild_tensor_v2.__module__='torch._utils'
utils._rebuild_tensor_v2=_rebuild_tensor_v2
sys.modules['torch']=torch; sys.modules['torch._utils']=utils
class Storage:
    def __init__(s, kind, key, numel): s.kind, s.key, s.numel = kind, key, numel
class T:
    def __init__(s, st, shape): s.st, s.shape = st, shape
    def __reduce__(s):
        stride=[]; acc=1
        for d in reversed(s.shape): stride.insert(0, acc); acc*=d
        return (_rebuild_tensor_v2, (s.st, 0, tuple(s.shape), tuple(stride), False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage): return ('storage', obj.kind, obj.key, 'cpu', obj.numel)
        return None
sd = collections.OrderedDict(); blobs = {}
import array
for i,(k,v) in enumerate(sorted((k,v) for k,v in hdr.items() if k!='__metadata__')):
    a,b = v['data_offsets']; data = body[a:b]; shape=v['shape']; numel=1
    for d in shape: numel*=d
    kind = {'F32':FloatStorage,'I64':LongStorage}[v['dtype']]
    if half and v['dtype']=='F32':
        f = array.array('f'); f.frombytes(data)
        data = b''.join(struct.pack('<e', x) for x in f); kind = HalfStorage
    blobs[str(i)] = data
    sd[k] = T(Storage(kind, str(i), numel), shape)
buf = io.BytesIO(); P(buf, protocol=2).dump({'state_dict': sd} if '--nested' in sys.argv else sd)
with zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', buf.getvalue())
    z.writestr('archive/byteorder', 'little')
    z.writestr('archive/version', '3\n')
    for k,d in blobs.items(): z.writestr('archive/data/'+k, d)
