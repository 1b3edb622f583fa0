// 16-bit attention (both kernel families, every masking) against the double reference, with bounds derived from the
// storage precision; lse, delta and every accumulation stay FP32.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;
using Ref = L2L.Kernels.Tests.MaskedAttentionReference;

namespace L2L.Kernels.Tests;

/// <summary>
/// qkv and dOutput are rounded to the format first and the reference uses them (see <see cref="Sixteen"/>). The
/// forward output is off by its rounding <c>u |y|</c> plus the FP32 kernel's tolerance (AttentionTests: 1e-5 absolute
/// and 1e-4 relative on the CPU accelerator, 1e-4 / 2e-3 on GPUs); lse is FP32 and held to the FP32 tolerance. The
/// backward reads the forward's 16-bit output for <c>delta = sum dO . O</c>, so its reference takes that delta (the
/// exact gradient corrected by <c>-scale P (delta16 - delta)</c> times k for dq and q for dk); what remains is the
/// rounding of dQkv, <c>u |dqkv|</c>, plus the FP32 tolerance. The FP32 instantiation of these kernels is what
/// AttentionTests checks against finite differences.
/// </summary>
public sealed class Attention16Tests(BackendFixture fixture)
{
    private static readonly (int B, int T, int C, int NH)[] Shapes = [(1, 1, 4, 1), (2, 3, 6, 2), (1, 7, 12, 3), (2, 22, 8, 2), (1, 33, 64, 1)];

    public static TheoryData<DeviceKind, Store16, AttentionPath> Cases
    {
        get
        {
            var data = new TheoryData<DeviceKind, Store16, AttentionPath>();
            foreach (var d in TestSupport.Devices.All)
                foreach (var f in Sixteen.Formats)
                    foreach (var path in new[] { AttentionPath.Rows, AttentionPath.Tiled })
                        data.Add(d.Data, f.Data, path);
            return data;
        }
    }

    private static (double Atol, double Rtol) Tolerance(DeviceKind kind) => kind == DeviceKind.Cpu ? (1e-5, 1e-4) : (1e-4, 2e-3);

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndBackwardMatchReference(DeviceKind kind, Store16 format, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<AttentionOps>();
        var s = backend.ComputeStream;
        var (atol, rtol) = Tolerance(kind);
        var u = Sixteen.UnitRoundoff(format);
        var seed = 500;
        foreach (var (b, t, c, nh) in Shapes)
            foreach (var (causal, masked) in new[] { (true, false), (false, true), (true, true) })
            {
                var keyMask = masked ? Enumerable.Range(0, b * t).Select(i => i % t % 3 == 2 ? 0 : 1).ToArray() : null;
                var qkv = Sixteen.Round(format, TestData.Normal(seed++, 3 * b * t * c, 1.5));
                var dOut = Sixteen.Round(format, TestData.Normal(seed++, b * t * c));
                using var dQkvIn = new Buffer16(backend, format, qkv);
                using var dDout = new Buffer16(backend, format, dOut);
                using var output = new Buffer16(backend, format, b * t * c);
                using var dQkv = new Buffer16(backend, format, 3 * b * t * c);
                using var lse = backend.Zeros<float>(AttentionOps.LseLength(b, t, nh));
                using var mask = backend.Upload(keyMask ?? [1]);
                var maskView = masked ? mask.View : default;
                using var forwardScratch = backend.Zeros<float>(Math.Max(1, ops.SixteenBitForwardScratchLength(b, t, c, nh, path)));
                using var backwardScratch = backend.Zeros<float>(ops.SixteenBitBackwardScratchLength(b, t, c, nh, path));
                if (format == Store16.Bf16)
                {
                    ops.Forward(s, output.Bf, lse.View, forwardScratch.View, dQkvIn.Bf, default, maskView, b, t, c, nh, causal, path);
                    ops.Backward(s, dQkv.Bf, dDout.Bf, dQkvIn.Bf, output.Bf, lse.View, backwardScratch.View, default, maskView, b, t, c, nh, causal, path);
                }
                else
                {
                    ops.Forward(s, output.Fp, lse.View, forwardScratch.View, dQkvIn.Fp, default, maskView, b, t, c, nh, causal, path);
                    ops.Backward(s, dQkv.Fp, dDout.Fp, dQkvIn.Fp, output.Fp, lse.View, backwardScratch.View, default, maskView, b, t, c, nh, causal, path);
                }
                var what = $"{format} {path} B={b} T={t} C={c} NH={nh} causal={causal} masked={masked}";
                var x = TestData.ToDouble(qkv);
                var (expectedOutput, expectedLse, probs) = Ref.Forward(x, null, keyMask, b, t, c, nh, causal);
                var y16 = output.Download();
                Sixteen.AssertWithin(expectedOutput, y16, expectedOutput.Select(e => (u + rtol) * Math.Abs(e) + atol).ToArray(), "output " + what);
                var gotLse = backend.Download(lse);
                for (var i = 0; i < expectedLse.Length; i++)
                    Assert.True(double.IsNegativeInfinity(expectedLse[i]) ? float.IsNegativeInfinity(gotLse[i]) : Math.Abs(gotLse[i] - expectedLse[i]) <= atol + rtol * Math.Abs(expectedLse[i]),
                        $"lse {what} [{i}]: {gotLse[i]} vs {expectedLse[i]}");

                var expected = Ref.Backward(TestData.ToDouble(dOut), x, null, keyMask, b, t, c, nh, causal);
                CorrectForStoredOutput(expected, probs, x, dOut, expectedOutput, y16, b, t, c, nh);
                Sixteen.AssertWithin(expected, dQkv.Download(), expected.Select(e => (u + rtol) * Math.Abs(e) + atol).ToArray(), "dQkv " + what);
            }
    }

    /// <summary>
    /// Turns the exact gradient into the one computed with <c>delta16 = sum dO . O16</c> from the stored output:
    /// ds changes by <c>-P (delta16 - delta)</c>, so dq_t gains <c>-scale sum_j P_tj e_t k_j</c> and dk_j gains
    /// <c>-scale sum_t P_tj e_t q_t</c>, with <c>e_t = delta16_t - delta_t</c>; dv does not depend on delta.
    /// </summary>
    private static void CorrectForStoredOutput(double[] dQkv, double[] probs, double[] qkv, float[] dOut, double[] output, float[] output16,
        int b, int t, int c, int nh)
    {
        var hs = c / nh;
        var scale = 1.0 / Math.Sqrt(hs);
        for (var bi = 0; bi < b; bi++)
        for (var h = 0; h < nh; h++)
        for (var tq = 0; tq < t; tq++)
        {
            var e = 0.0;
            for (var i = 0; i < hs; i++)
            {
                var o = (bi * t + tq) * c + h * hs + i;
                e += dOut[o] * (output16[o] - output[o]);
            }
            var row = (bi * nh + h) * t + tq;
            for (var j = 0; j < t; j++)
            {
                var p = probs[row * t + j];
                if (p == 0) continue;
                for (var i = 0; i < hs; i++)
                {
                    var q = (bi * t + tq) * 3 * c + h * hs + i;
                    var k = (bi * t + j) * 3 * c + c + h * hs + i;
                    dQkv[q] -= scale * p * e * qkv[k];
                    dQkv[k] -= scale * p * e * qkv[q];
                }
            }
        }
    }

    [Fact]
    public void ScratchIsRequiredOnlyByTheRowKernels()
    {
        var ops = fixture.Get(DeviceKind.Cpu).Get<AttentionOps>();
        Assert.Equal(2 * 5 * 8, ops.SixteenBitForwardScratchLength(2, 5, 8, 2, AttentionPath.Rows));
        Assert.Equal(0, ops.SixteenBitForwardScratchLength(2, 5, 8, 2, AttentionPath.Tiled));
        Assert.Equal(2 * 2 * 5 + 3 * 2 * 5 * 8, ops.SixteenBitBackwardScratchLength(2, 5, 8, 2, AttentionPath.Rows));
        Assert.Equal(2 * 2 * 5, ops.SixteenBitBackwardScratchLength(2, 5, 8, 2, AttentionPath.Tiled));
        var backend = fixture.Get(DeviceKind.Cpu);
        using var qkv = backend.Zeros<Bf16>(3 * 2 * 5 * 8);
        using var output = backend.Zeros<Bf16>(2 * 5 * 8);
        using var lse = backend.Zeros<float>(2 * 2 * 5);
        using var small = backend.Zeros<float>(2 * 5 * 8 - 1);
        var e = Assert.Throws<ArgumentException>(() =>
            ops.Forward(backend.ComputeStream, output.View, lse.View, small.View, qkv.View, default, default, 2, 5, 8, 2, true, AttentionPath.Rows));
        Assert.Contains("scratch", e.Message);
    }
}
