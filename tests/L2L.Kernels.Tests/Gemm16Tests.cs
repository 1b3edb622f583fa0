// 16-bit matrix products (every layout, every kernel path, 16-bit or FP32 output) and the bias gradient from 16-bit
// dOut, against the double reference with bounds derived from the storage precision.
using ILGPU.Runtime.CPU;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

/// <summary>
/// Operands are rounded to the format on the host and the reference uses the rounded values (see <see cref="Sixteen"/>).
/// With <c>S = |alpha| sum_p |a_ip b_pj| + |bias_j| + |c0_ij|</c>, an FP32 result is within <c>(K + 3) 2^-24 S</c>
/// (K products summed in FP32, then alpha, bias and the old C: one rounding each), and a 16-bit result adds the final
/// rounding <c>u |c|</c>. End to end, against the unrounded FP32 operands, input rounding adds up to <c>2 u S</c>
/// (each operand off by at most <c>u</c> relative), which <see cref="InputRoundingIsBoundedByTwoUnitRoundoffs"/> checks.
/// The FP32 instantiation of the same kernels is what GemmTests and its finite-difference checks exercise.
/// </summary>
public sealed class Gemm16Tests(BackendFixture fixture)
{
    private static readonly (int M, int N, int K)[] Shapes =
        [(1, 1, 1), (3, 7, 22), (22, 3, 127), (127, 22, 3), (7, 127, 1), (1, 3, 7)];

    private static readonly (bool Bias, bool Accumulate, float Alpha)[] Options =
        [(false, false, 1f), (true, false, -0.75f), (false, true, 2.5f), (true, true, -1.25f)];

    private static readonly Lazy<Backend> GpuShapedCpu = new(() =>
        Backend.Create(new DeviceSpec(DeviceKind.Cpu), new CPUDevice(numThreadsPerWarp: 32, numWarpsPerMultiprocessor: 8, numMultiprocessors: 1)));

    private static readonly Dictionary<(Backend, string), GemmOps> Loaded = new();

    public static TheoryData<DeviceKind, Store16, string, GemmLayout> Cases
    {
        get
        {
            var data = new TheoryData<DeviceKind, Store16, string, GemmLayout>();
            foreach (var d in TestSupport.Devices.All)
                foreach (var f in Sixteen.Formats)
                    foreach (var variant in new[] { "default", "direct", "tiled", "large" })
                        foreach (var layout in Enum.GetValues<GemmLayout>())
                            data.Add(d.Data, f.Data, variant, layout);
            return data;
        }
    }

    public static TheoryData<DeviceKind, Store16> DevicesAndFormats
    {
        get
        {
            var data = new TheoryData<DeviceKind, Store16>();
            foreach (var d in TestSupport.Devices.All)
                foreach (var f in Sixteen.Formats)
                    data.Add(d.Data, f.Data);
            return data;
        }
    }

    private (Backend, GemmOps) Ops(DeviceKind kind, string variant)
    {
        var backend = variant == "large" && kind == DeviceKind.Cpu ? GpuShapedCpu.Value : fixture.Get(kind);
        if (variant == "default")
            return (backend, backend.Get<GemmOps>());
        lock (Loaded)
        {
            if (!Loaded.TryGetValue((backend, variant), out var ops))
                Loaded[(backend, variant)] = ops = variant switch
                {
                    "direct" => new GemmOps(backend, 0, 0, 0),
                    "tiled" => new GemmOps(backend, 4, 2, 8),
                    _ => new GemmOps(backend, GemmPath.LargeTiles),
                };
            return (backend, ops);
        }
    }

    private static double[] AbsBound(float[] a, float[] b, float[]? bias, float[]? c0, int m, int n, int k, GemmLayout layout, float alpha) =>
        GemmReference.Gemm(a.Select(x => (double)Math.Abs(x)).ToArray(), b.Select(x => (double)Math.Abs(x)).ToArray(), m, n, k, layout,
            Math.Abs(alpha), bias?.Select(x => (double)Math.Abs(x)).ToArray(), c0?.Select(x => (double)Math.Abs(x)).ToArray());

    [Theory]
    [MemberData(nameof(Cases))]
    public void SixteenBitProductMatchesReference(DeviceKind kind, Store16 format, string variant, GemmLayout layout)
    {
        var (backend, ops) = Ops(kind, variant);
        var s = backend.ComputeStream;
        var seed = 900;
        var shapes = variant == "large" ? Shapes.Append((129, 130, 9)).ToArray() : Shapes;
        foreach (var (m, n, k) in shapes)
            foreach (var (withBias, accumulate, alpha) in Options)
            {
                var a = Sixteen.Round(format, TestData.Normal(seed++, m * k));
                var b = Sixteen.Round(format, TestData.Normal(seed++, k * n));
                var bias = withBias ? Sixteen.Round(format, TestData.Normal(seed++, n)) : null;
                var c0 = accumulate ? Sixteen.Round(format, TestData.Normal(seed++, m * n)) : null;
                using var da = new Buffer16(backend, format, a);
                using var db = new Buffer16(backend, format, b);
                using var dc = new Buffer16(backend, format, c0 ?? new float[m * n]);
                using var dbias = new Buffer16(backend, format, bias ?? new float[1]);
                if (format == Store16.Bf16)
                    ops.Gemm(s, dc.Bf, da.Bf, db.Bf, m, n, k, layout, accumulate, withBias ? dbias.Bf : default, alpha);
                else
                    ops.Gemm(s, dc.Fp, da.Fp, db.Fp, m, n, k, layout, accumulate, withBias ? dbias.Fp : default, alpha);
                var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout, alpha,
                    bias is null ? null : TestData.ToDouble(bias), c0 is null ? null : TestData.ToDouble(c0));
                var abs = AbsBound(a, b, bias, c0, m, n, k, layout, alpha);
                var bound = expected.Select((e, i) => Sixteen.UnitRoundoff(format) * Math.Abs(e) + (k + 3) * Sixteen.Fp32 * abs[i] + Sixteen.Floor(format)).ToArray();
                Sixteen.AssertWithin(expected, dc.Download(), bound, $"{format} {variant} {layout} ({m},{n},{k}) bias={withBias} acc={accumulate}");
            }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SixteenBitOperandsAccumulateIntoFp32(DeviceKind kind, Store16 format, string variant, GemmLayout layout)
    {
        // The weight-gradient form: dW (FP32) += op(A) . op(B) from 16-bit operands, twice (two micro-batches).
        var (backend, ops) = Ops(kind, variant);
        var s = backend.ComputeStream;
        var seed = 1900;
        foreach (var (m, n, k) in Shapes)
        {
            var a = Sixteen.Round(format, TestData.Normal(seed++, m * k));
            var b = Sixteen.Round(format, TestData.Normal(seed++, k * n));
            var c0 = TestData.Normal(seed++, m * n); // FP32 values, not representable in 16 bits
            using var da = new Buffer16(backend, format, a);
            using var db = new Buffer16(backend, format, b);
            using var dc = backend.Upload(c0);
            for (var micro = 0; micro < 2; micro++)
            {
                if (format == Store16.Bf16) ops.Gemm(s, dc.View, da.Bf, db.Bf, m, n, k, layout, accumulate: true);
                else ops.Gemm(s, dc.View, da.Fp, db.Fp, m, n, k, layout, accumulate: true);
            }
            var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, layout, 2.0, null, TestData.ToDouble(c0));
            var abs = AbsBound(a, b, null, c0, m, n, k, layout, 2f);
            var bound = abs.Select(x => 2 * (k + 3) * Sixteen.Fp32 * x).ToArray();
            Sixteen.AssertWithin(expected, backend.Download(dc), bound, $"{format} {variant} {layout} ({m},{n},{k}) into FP32");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndFormats))]
    public void InputRoundingIsBoundedByTwoUnitRoundoffs(DeviceKind kind, Store16 format)
    {
        // Against the unrounded FP32 operands: |C16 - C| <= u |C| + (2 u + u^2 + (K + 3) 2^-24) S.
        var backend = fixture.Get(kind);
        var ops = backend.Get<GemmOps>();
        const int m = 22, n = 7, k = 127;
        var a = TestData.Normal(41, m * k);
        var b = TestData.Normal(42, k * n);
        using var da = new Buffer16(backend, format, a);
        using var db = new Buffer16(backend, format, b);
        using var dc = new Buffer16(backend, format, m * n);
        if (format == Store16.Bf16) ops.Gemm(backend.ComputeStream, dc.Bf, da.Bf, db.Bf, m, n, k, GemmLayout.NN);
        else ops.Gemm(backend.ComputeStream, dc.Fp, da.Fp, db.Fp, m, n, k, GemmLayout.NN);
        var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), m, n, k, GemmLayout.NN);
        var abs = AbsBound(a, b, null, null, m, n, k, GemmLayout.NN, 1f);
        var u = Sixteen.UnitRoundoff(format);
        var bound = expected.Select((e, i) => u * Math.Abs(e) + (2 * u + u * u + (k + 3) * Sixteen.Fp32) * abs[i]).ToArray();
        Sixteen.AssertWithin(expected, dc.Download(), bound, $"{format} end to end");
    }

    [Theory]
    [MemberData(nameof(DevicesAndFormats))]
    public void ExtremeValues(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GemmOps>();
        var s = backend.ComputeStream;
        // (1 x 2) . (2 x 3): FP16 sums of 300 * 300 = 90000 overflow the 16-bit C to infinity, while an FP32 C holds
        // them exactly; BF16 keeps 1e30 * 1e7 = 1e37 (beyond FP16 and far beyond 65504) finite. Subnormal operands
        // (FP16 6e-8 .. 6e-5, BF16 below 1.2e-38) are multiplied, not flushed.
        float[] a = format == Store16.Fp16 ? [300f, 300f] : [1e30f, 1e30f];
        float[] b = format == Store16.Fp16 ? [300f, 1e-3f, 2e-5f, 300f, -1e-3f, 3e-5f] : [1e7f, 1e-38f, 3e-39f, 1e7f, 0f, 3e-39f];
        a = Sixteen.Round(format, a);
        b = Sixteen.Round(format, b);
        using var da = new Buffer16(backend, format, a);
        using var db = new Buffer16(backend, format, b);
        using var dc = new Buffer16(backend, format, 3);
        using var dcf = backend.Zeros<float>(3);
        if (format == Store16.Bf16) { ops.Gemm(s, dc.Bf, da.Bf, db.Bf, 1, 3, 2, GemmLayout.NN); ops.Gemm(s, dcf.View, da.Bf, db.Bf, 1, 3, 2, GemmLayout.NN); }
        else { ops.Gemm(s, dc.Fp, da.Fp, db.Fp, 1, 3, 2, GemmLayout.NN); ops.Gemm(s, dcf.View, da.Fp, db.Fp, 1, 3, 2, GemmLayout.NN); }
        var got = dc.Download();
        var wide = backend.Download(dcf);
        var expected = GemmReference.Gemm(TestData.ToDouble(a), TestData.ToDouble(b), 1, 3, 2, GemmLayout.NN);
        if (format == Store16.Fp16)
        {
            Assert.Equal(float.PositiveInfinity, got[0]);
            Assert.Equal(180000f, wide[0]);
            // 300 * (2e-5 + 3e-5) ~ 0.015 from subnormal FP16 operands: multiplied exactly in FP32.
            Assert.Equal(expected[2], wide[2], Math.Abs(expected[2]) * 1e-6);
        }
        else
        {
            Assert.True(float.IsFinite(got[0]));
            Assert.Equal(expected[0], got[0], Math.Abs(expected[0]) * Sixteen.UnitRoundoff(format));
            Assert.Equal(expected[2], wide[2], Math.Abs(expected[2]) * 1e-6); // 1e30 * 6e-39 from BF16 subnormals
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndFormats))]
    public void BiasGradientFromSixteenBitAccumulatesInFp32(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<GemmOps>();
        foreach (var (rows, n) in new[] { (1, 1), (3, 7), (127, 22), (22, 127) })
        {
            var dOut = Sixteen.Round(format, TestData.Normal(rows + n, rows * n));
            var dBias0 = TestData.Normal(rows * n, n);
            using var d = new Buffer16(backend, format, dOut);
            using var dBias = backend.Upload(dBias0);
            if (format == Store16.Bf16) ops.BiasBackward(backend.ComputeStream, dBias.View, d.Bf, rows, n);
            else ops.BiasBackward(backend.ComputeStream, dBias.View, d.Fp, rows, n);
            var expected = GemmReference.BiasBackward(TestData.ToDouble(dOut), rows, n, TestData.ToDouble(dBias0));
            var abs = GemmReference.BiasBackward(dOut.Select(x => (double)Math.Abs(x)).ToArray(), rows, n, dBias0.Select(x => (double)Math.Abs(x)).ToArray());
            Sixteen.AssertWithin(expected, backend.Download(dBias), abs.Select(x => (rows + 1) * Sixteen.Fp32 * x).ToArray(), $"{format} ({rows},{n})");
        }
    }
}
