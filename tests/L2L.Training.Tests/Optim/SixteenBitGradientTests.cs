// Every host optimizer with gradients in FP32, BF16 or FP16 and a 16-bit copy out in none, BF16 or FP16: bit-exact
// against widening the gradients to FP32, running the FP32 step and rounding the result.
using L2L.Kernels;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests.Optim;

public sealed class SixteenBitGradientTests
{
    public enum Grads { Fp32, Bf16, Fp16 }

    public enum Copy { None, Bf16, Fp16 }

    public static TheoryData<OptimizerKind, Grads, Copy, int> Cases()
    {
        var data = new TheoryData<OptimizerKind, Grads, Copy, int>();
        foreach (var kind in Enum.GetValues<OptimizerKind>())
            foreach (var grads in Enum.GetValues<Grads>())
                foreach (var copy in Enum.GetValues<Copy>())
                    // Odd lengths: a scalar tail after the vector body for every SIMD width, and one past a chunk (16K) of the threaded split.
                    foreach (var n in new[] { 1, 3, 7, 22, 127, 40_003 })
                        data.Add(kind, grads, copy, n);
        return data;
    }

    private static float[] Gradient(int step, int n)
    {
        var g = TestData.Normal(100 + step, n, scale: 0.01);
        // Zeros, large values and values below the FP16 normal range exercise both formats at their edges.
        for (var i = 0; i < n; i += 13) g[i] = 0f;
        for (var i = 5; i < n; i += 101) g[i] *= 300f;
        for (var i = 9; i < n; i += 37) g[i] *= 1e-4f;
        return g;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void SixteenBitGradientsAndCopiesAreTheFp32StepOnWidenedGradients(OptimizerKind kind, Grads grads, Copy copy, int n)
    {
        var settings = new OptimizerSettings(kind, LearningRate: 1e-3f, Beta1: 0.9f, Beta2: 0.999f, Epsilon: 1e-8f, WeightDecay: 0.1f);
        var opt = HostOptimizers.Create(settings, threads: 2);
        var reference = HostOptimizers.Create(settings, threads: 1);
        var p = TestData.Normal(1, n, scale: 0.5);
        var rp = (float[])p.Clone();
        var state = new float[opt.StateFloatsPerParam * n];
        var rstate = new float[opt.StateFloatsPerParam * n];
        var bf16 = copy == Copy.Bf16 ? new Bf16[n] : [];
        var half = copy == Copy.Fp16 ? new Half[n] : [];
        for (var step = 1; step <= 3; step++)
        {
            var g = Gradient(step, n);
            var lr = 1e-3f * step;
            var decay = step != 2;
            // The gradients as they arrive, and the FP32 values the reference steps on (widening is exact for both formats).
            float[] widened;
            switch (grads)
            {
                case Grads.Bf16:
                {
                    var gb = g.Select(Bf16.FromSingle).ToArray();
                    widened = gb.Select(x => x.ToSingle()).ToArray();
                    if (copy == Copy.Bf16) opt.StepWithBf16Copy(p, gb, state, bf16, step, lr, decay);
                    else opt.Step(p, gb, state, half, step, lr, decay);
                    break;
                }
                case Grads.Fp16:
                {
                    var gh = g.Select(x => (Half)x).ToArray();
                    widened = gh.Select(x => (float)x).ToArray();
                    if (copy == Copy.Bf16) opt.StepWithBf16Copy(p, gh, state, bf16, step, lr, decay);
                    else opt.Step(p, gh, state, half, step, lr, decay);
                    break;
                }
                default:
                    widened = g;
                    if (copy == Copy.Bf16) opt.StepWithBf16Copy(p, g, state, bf16, step, lr, decay);
                    else opt.Step(p, g, state, half, step, lr, decay);
                    break;
            }
            reference.Step(rp, widened, rstate, Span<Half>.Empty, step, lr, decay);

            TensorAssert.Equal(rp, p, $"{kind} {grads} param after step {step}");
            TensorAssert.Equal(rstate, state, $"{kind} {grads} state after step {step}");
            for (var i = 0; i < bf16.Length; i++)
                Assert.True(bf16[i].Bits == Bf16.RoundBits(rp[i]), $"BF16 copy [{i}] = 0x{bf16[i].Bits:X4}, master {rp[i]:G9} rounds to 0x{Bf16.RoundBits(rp[i]):X4}");
            for (var i = 0; i < half.Length; i++)
                Assert.True(BitConverter.HalfToUInt16Bits(half[i]) == BitConverter.HalfToUInt16Bits((Half)rp[i]), $"FP16 copy [{i}] = {half[i]}, master {rp[i]:G9}");
        }
    }

    [Fact]
    public void Bf16GradientsOfTheWrongLengthAreRejected()
    {
        var opt = HostOptimizers.Create(new OptimizerSettings(OptimizerKind.AdamW, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f));
        var e = Assert.Throws<ArgumentException>(() => opt.Step(new float[4], new Bf16[3], new float[8], Span<Half>.Empty, 1, 1e-3f, false));
        Assert.Contains("grad has 3 elements", e.Message);
        Assert.Throws<ArgumentException>(() => opt.StepWithBf16Copy(new float[4], new Bf16[4], new float[8], new Bf16[5], 1, 1e-3f, false));
    }
}
