// 16-bit GELU (tanh and erf), residual and dropout kernels against double references, with bounds from the storage precision.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

/// <summary>
/// Inputs are rounded to the format on the host and the reference is computed from the rounded values, so the bound is
/// the output rounding <c>u |y|</c> (see <see cref="Sixteen"/>) plus the FP32 kernel's own error (relative 1e-5 on the
/// CPU accelerator, 1e-3 on GPUs whose exp is approximate, absolute 1e-6). The backward's FP32 form is the same
/// generic kernel, whose finite-difference checks live in GeluTests / GeluErfTests.
/// </summary>
public sealed class Elementwise16Tests(BackendFixture fixture)
{
    private static readonly int[] Lengths = [1, 3, 7, 22, 127];

    private static double Fp32Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-3;

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void GeluForwardAndBackwardMatchReference(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        var s = backend.ComputeStream;
        foreach (var erf in new[] { false, true })
            foreach (var n in Lengths)
            {
                var x = Sixteen.Round(format, TestData.Normal(n, n, 3.0));
                var dy = Sixteen.Round(format, TestData.Normal(n + 1, n));
                using var dx = new Buffer16(backend, format, x);
                using var ddy = new Buffer16(backend, format, dy);
                using var y = new Buffer16(backend, format, n);
                using var dIn = new Buffer16(backend, format, n);
                if (format == Store16.Bf16)
                {
                    if (erf) { ops.ForwardErf(s, y.Bf, dx.Bf); ops.BackwardErf(s, dIn.Bf, ddy.Bf, dx.Bf); }
                    else { ops.Forward(s, y.Bf, dx.Bf); ops.Backward(s, dIn.Bf, ddy.Bf, dx.Bf); }
                }
                else
                {
                    if (erf) { ops.ForwardErf(s, y.Fp, dx.Fp); ops.BackwardErf(s, dIn.Fp, ddy.Fp, dx.Fp); }
                    else { ops.Forward(s, y.Fp, dx.Fp); ops.Backward(s, dIn.Fp, ddy.Fp, dx.Fp); }
                }
                var xd = TestData.ToDouble(x);
                var forward = erf ? GeluReference.ForwardErf(xd) : GeluReference.Forward(xd);
                var backward = erf ? GeluReference.BackwardErf(TestData.ToDouble(dy), xd) : GeluReference.Backward(TestData.ToDouble(dy), xd);
                Sixteen.AssertWithin(forward, y.Download(), Sixteen.Bound(format, forward, Fp32Rtol(kind), 1e-6), $"{format} erf={erf} forward n={n}");
                Sixteen.AssertWithin(backward, dIn.Download(), Sixteen.Bound(format, backward, Fp32Rtol(kind), 1e-6), $"{format} erf={erf} backward n={n}");
            }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void GeluInPlaceAndExtremeInputs(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GeluOps>();
        var s = backend.ComputeStream;
        // Large, tiny (subnormal in FP16 / BF16) and, for BF16, huge inputs; FP16 inputs beyond 65504 are infinite already.
        float[] raw = format == Store16.Bf16
            ? [0f, -0f, 1e-30f, -1e-39f, 5f, -5f, 9f, -9f, 30f, -30f, 1e4f, -1e4f, 1e19f, -1e19f, 3e38f, -3e38f]
            : [0f, -0f, 1e-7f, -3e-6f, 5f, -5f, 9f, -9f, 30f, -30f, 1e4f, -1e4f, 60000f, -60000f];
        var x = Sixteen.Round(format, raw);
        var dy = Sixteen.Round(format, TestData.Normal(3, x.Length));
        using var buf = new Buffer16(backend, format, x);
        using var grad = new Buffer16(backend, format, dy);
        using var input = new Buffer16(backend, format, x);
        if (format == Store16.Bf16) { ops.Forward(s, buf.Bf, buf.Bf); ops.Backward(s, grad.Bf, grad.Bf, input.Bf); }
        else { ops.Forward(s, buf.Fp, buf.Fp); ops.Backward(s, grad.Fp, grad.Fp, input.Fp); }
        var xd = TestData.ToDouble(x);
        var forward = GeluReference.Forward(xd);
        var backward = GeluReference.Backward(TestData.ToDouble(dy), xd);
        Sixteen.AssertWithin(forward, buf.Download(), Sixteen.Bound(format, forward, Fp32Rtol(kind), 1e-6), $"{format} forward in place");
        Sixteen.AssertWithin(backward, grad.Download(), Sixteen.Bound(format, backward, Fp32Rtol(kind), 1e-6), $"{format} backward in place");
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void ResidualAddAndAccumulateMatchReference(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        var s = backend.ComputeStream;
        foreach (var n in Lengths)
        {
            var a = Sixteen.Round(format, TestData.Normal(n, n));
            var b = Sixteen.Round(format, TestData.Normal(n + 1, n, 10.0));
            using var da = new Buffer16(backend, format, a);
            using var db = new Buffer16(backend, format, b);
            using var sum = new Buffer16(backend, format, n);
            using var acc = backend.Upload(TestData.Normal(n + 2, n));
            var acc0 = backend.Download(acc);
            if (format == Store16.Bf16) { ops.Add(s, sum.Bf, da.Bf, db.Bf); ops.Accumulate(s, da.Bf, db.Bf); ops.Accumulate(s, acc.View, db.Bf); }
            else { ops.Add(s, sum.Fp, da.Fp, db.Fp); ops.Accumulate(s, da.Fp, db.Fp); ops.Accumulate(s, acc.View, db.Fp); }
            var expected = a.Zip(b, (x, y) => (double)x + y).ToArray();
            // The FP32 sum of two 16-bit values is exact (their exponents differ by far less than 24 bits here), so only the output rounds.
            Sixteen.AssertWithin(expected, sum.Download(), Sixteen.Bound(format, expected, 0), $"{format} add n={n}");
            Sixteen.AssertWithin(expected, da.Download(), Sixteen.Bound(format, expected, 0), $"{format} accumulate n={n}");
            var expectedAcc = acc0.Zip(b, (x, y) => (double)x + y).ToArray();
            TensorAssert.Close(expectedAcc, backend.Download(acc), 0, Sixteen.Fp32, $"{format} FP32 accumulator n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void ScaledAddMatchesReferenceAndRunsInPlace(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        var s = backend.ComputeStream;
        foreach (var n in Lengths)
        {
            var a = Sixteen.Round(format, TestData.Normal(3 * n, n));
            var b = Sixteen.Round(format, TestData.Normal(3 * n + 1, n, 10.0));
            const float wa = 0.7071f, wb = -1.37f;
            using var da = new Buffer16(backend, format, a);
            using var db = new Buffer16(backend, format, b);
            using var output = new Buffer16(backend, format, n);
            if (format == Store16.Bf16) { ops.ScaledAdd(s, output.Bf, da.Bf, wa, db.Bf, wb); ops.ScaledAdd(s, da.Bf, da.Bf, wa, da.Bf, 0f); }
            else { ops.ScaledAdd(s, output.Fp, da.Fp, wa, db.Fp, wb); ops.ScaledAdd(s, da.Fp, da.Fp, wa, da.Fp, 0f); }
            // Two FP32 products and a sum (3 FP32 roundings of terms at most |wa a| + |wb b|), then one rounding into the format.
            var expected = a.Zip(b, (x, y) => (double)wa * x + (double)wb * y).ToArray();
            var fp32 = a.Zip(b, (x, y) => 3 * Sixteen.Fp32 * (Math.Abs((double)wa * x) + Math.Abs((double)wb * y))).ToArray();
            var bound = Sixteen.Bound(format, expected, 0).Zip(fp32, (x, y) => x + y).ToArray();
            Sixteen.AssertWithin(expected, output.Download(), bound, $"{format} scaled add n={n}");
            var scaled = a.Select(x => (double)wa * x).ToArray();
            Sixteen.AssertWithin(scaled, da.Download(), Sixteen.Bound(format, scaled, Sixteen.Fp32), $"{format} in-place scale n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void GenericCastsRoundToTheFormatAndWidenExactly(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var casts = backend.Get<CastOps>();
        var s = backend.ComputeStream;
        var x = TestData.Normal(5, 127, 3.0);
        using var input = backend.Upload(x);
        using var wide = backend.Zeros<float>(x.Length);
        using var narrow = new Buffer16(backend, format, x.Length);
        if (format == Store16.Bf16) { casts.FromFloat(s, narrow.Bf, input.View); casts.ToFloat<Bf16>(s, wide.View, narrow.Bf); }
        else { casts.FromFloat(s, narrow.Fp, input.View); casts.ToFloat<ILGPU.Half>(s, wide.View, narrow.Fp); }
        TensorAssert.Equal(Sixteen.Round(format, x), backend.Download(wide), $"{format} round trip");
        using var copy = backend.Zeros<float>(x.Length);
        casts.FromFloat<float>(s, copy.View, input.View);
        TensorAssert.Equal(x, backend.Download(copy), "fp32 copy");
    }

    [Theory]
    [MemberData(nameof(Devices.All), MemberType = typeof(Devices))]
    public void GenericFp32EntryPointsRunTheFp32Kernels(DeviceKind kind)
    {
        // The layers call the launchers' generic entry points; with float they must give the FP32 overloads' bits.
        var backend = fixture.Get(kind);
        var residual = backend.Get<ResidualOps>();
        var gelu = backend.Get<GeluOps>();
        var s = backend.ComputeStream;
        const int n = 127;
        using var a = backend.Upload(TestData.Normal(1, n));
        using var b = backend.Upload(TestData.Normal(2, n));
        using var plain = backend.Zeros<float>(n);
        using var generic = backend.Zeros<float>(n);
        residual.ScaledAdd(s, plain.View, a.View, 0.3f, b.View, 1.7f);
        residual.ScaledAdd<float>(s, generic.View, a.View, 0.3f, b.View, 1.7f);
        TensorAssert.Equal(backend.Download(plain), backend.Download(generic), "scaled add");
        gelu.Forward(s, plain.View, a.View);
        gelu.Forward<float>(s, generic.View, a.View);
        TensorAssert.Equal(backend.Download(plain), backend.Download(generic), "gelu");
        Assert.Throws<NotSupportedException>(() => gelu.Forward<int>(s, default, default));
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void ResidualOverflowAndRange(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        var s = backend.ComputeStream;
        // FP16: 40000 + 30000 = 70000 lies beyond 65504 (and the midpoint 65520), so it is infinity; BF16 keeps FP32's range.
        float[] a = format == Store16.Fp16 ? [40000f, -40000f, 30000f, 3e-6f] : [2e38f, -2e38f, 1e38f, 1e-39f];
        float[] b = format == Store16.Fp16 ? [30000f, -30000f, 30000f, 3e-6f] : [2e38f, -2e38f, 1e38f, 1e-39f];
        using var da = new Buffer16(backend, format, a);
        using var db = new Buffer16(backend, format, b);
        using var sum = new Buffer16(backend, format, a.Length);
        if (format == Store16.Bf16) ops.Add(s, sum.Bf, da.Bf, db.Bf); else ops.Add(s, sum.Fp, da.Fp, db.Fp);
        var got = sum.Download();
        Assert.Equal(float.PositiveInfinity, got[0]);
        Assert.Equal(float.NegativeInfinity, got[1]);
        if (format == Store16.Fp16)
        {
            Assert.Equal(60000f, got[2]);
            Assert.Equal(2 * Sixteen.Round(format, 3e-6f), got[3]); // subnormals add exactly
        }
        else
        {
            Assert.Equal(Sixteen.Round(format, 2e38f), got[2]);
            Assert.Equal(2 * Sixteen.Round(format, 1e-39f), got[3]); // FP32 subnormals are BF16 values too
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void DropoutUsesTheFp32MaskAndRoundsOnce(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<DropoutOps>();
        var s = backend.ComputeStream;
        foreach (var p in new[] { 0f, 0.1f, 0.5f })
            foreach (var n in Lengths)
            {
                var x = Sixteen.Round(format, TestData.Normal(n + 5, n, 3.0));
                var key = DropoutKernels.Key(7, 2, 1, 0);
                using var wide = backend.Upload(x);
                using var narrow = new Buffer16(backend, format, x);
                ops.Apply(s, wide.View, wide.View, p, key, offset: 40);
                if (format == Store16.Bf16) ops.Apply(s, narrow.Bf, narrow.Bf, p, key, offset: 40);
                else ops.Apply(s, narrow.Fp, narrow.Fp, p, key, offset: 40);
                var expected = TestData.ToDouble(backend.Download(wide)); // FP32: exact scaling of the kept values up to one FP32 rounding
                var got = narrow.Download();
                for (var i = 0; i < n; i++)
                    Assert.True((expected[i] == 0) == (got[i] == 0) || x[i] == 0, $"{format} p={p} n={n}: mask differs at {i}");
                Sixteen.AssertWithin(expected, got, Sixteen.Bound(format, expected, Sixteen.Fp32), $"{format} p={p} n={n}");
            }
    }
}
