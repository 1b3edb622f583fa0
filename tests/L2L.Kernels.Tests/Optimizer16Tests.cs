// Device AdamW / SGD with a 16-bit working copy: FP32 master weights and state bit-identical to the plain FP32 step,
// and the copy bit-identical to round-to-nearest-even of the updated weights.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class Optimizer16Tests(BackendFixture fixture)
{
    private static ushort ExpectedBits(Store16 format, float x) =>
        format == Store16.Bf16 ? Bf16.RoundBits(x) : BitConverter.HalfToUInt16Bits((System.Half)x);

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void StepsWriteTheWorkingCopyAndLeaveTheFp32UpdateUnchanged(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<OptimizerOps>();
        var s = backend.ComputeStream;
        foreach (var n in new[] { 1, 3, 7, 22, 127 })
        {
            var p = TestData.Normal(n, n, 0.5);
            if (format == Store16.Fp16 && n > 2) p[1] = 70000f; // beyond FP16: the copy is infinite, the master weight is not
            var g = TestData.Normal(n + 1, n, 0.1);
            var m0 = TestData.Normal(n + 2, n, 0.01);
            var v0 = TestData.Uniform(n + 3, n, 0, 1e-3);
            using var p32 = backend.Upload(p);
            using var m32 = backend.Upload(m0);
            using var v32 = backend.Upload(v0);
            using var p16 = backend.Upload(p);
            using var m16 = backend.Upload(m0);
            using var v16 = backend.Upload(v0);
            using var grad = backend.Upload(g);
            using var copy = new Buffer16(backend, format, n);
            using var sgdP32 = backend.Upload(p);
            using var sgdP16 = backend.Upload(p);
            using var sgdCopy = new Buffer16(backend, format, n);
            ops.AdamW(s, p32.View, grad.View, m32.View, v32.View, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.19f, 0.002f);
            ops.Sgd(s, sgdP32.View, grad.View, 1e-2f, 0.1f);
            if (format == Store16.Bf16)
            {
                ops.AdamW(s, p16.View, grad.View, m16.View, v16.View, copy.Bf, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.19f, 0.002f);
                ops.Sgd(s, sgdP16.View, grad.View, sgdCopy.Bf, 1e-2f, 0.1f);
            }
            else
            {
                ops.AdamW(s, p16.View, grad.View, m16.View, v16.View, copy.Fp, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, 0.19f, 0.002f);
                ops.Sgd(s, sgdP16.View, grad.View, sgdCopy.Fp, 1e-2f, 0.1f);
            }
            var what = $"{format} n={n}";
            var updated = backend.Download(p32);
            TensorAssert.Equal(updated, backend.Download(p16), "AdamW param " + what);
            TensorAssert.Equal(backend.Download(m32), backend.Download(m16), "AdamW m " + what);
            TensorAssert.Equal(backend.Download(v32), backend.Download(v16), "AdamW v " + what);
            Assert.Equal(updated.Select(x => ExpectedBits(format, x)).ToArray(), copy.Bits());
            var sgd = backend.Download(sgdP32);
            TensorAssert.Equal(sgd, backend.Download(sgdP16), "SGD param " + what);
            Assert.Equal(sgd.Select(x => ExpectedBits(format, x)).ToArray(), sgdCopy.Bits());
        }
    }
}
