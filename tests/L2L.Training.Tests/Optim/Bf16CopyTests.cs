// The host optimizers' BF16 copy of the updated weights: bit-exact against an independent nearest-neighbour rounding,
// written in the same pass without changing the FP32 update, for every optimizer, gradient type and size.
using L2L.Kernels;
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests.Optim;

public sealed class Bf16CopyTests
{
    /// <summary>
    /// The BF16 nearest to <paramref name="x"/>: of the two BF16 values bracketing it (its truncation and the next one
    /// up in magnitude, 2^128 standing in for infinity) the one closer in double arithmetic, ties to the even one.
    /// </summary>
    private static ushort Reference(float x)
    {
        var bits = BitConverter.SingleToUInt32Bits(x);
        var lower = (ushort)(bits >> 16);
        var upper = (ushort)(lower + 1);
        double Value(ushort b) => (b & 0x7F80) == 0x7F80
            ? ((b & 0x8000) != 0 ? -1 : 1) * Math.Pow(2, 128)
            : BitConverter.UInt32BitsToSingle((uint)b << 16);
        var dLower = Math.Abs(x - Value(lower));
        var dUpper = Math.Abs(Value(upper) - x);
        return dLower < dUpper ? lower : dUpper < dLower ? upper : (lower & 1) == 0 ? lower : upper;
    }

    private static void AssertCopy(ReadOnlySpan<float> p, ReadOnlySpan<Bf16> copy, string what)
    {
        for (var i = 0; i < p.Length; i++)
        {
            var expected = float.IsNaN(p[i]) ? (ushort)0 : Reference(p[i]);
            if (float.IsNaN(p[i]) ? !float.IsNaN(copy[i].ToSingle()) : copy[i].Bits != expected)
                Assert.Fail($"{what}: [{i}] = {p[i]:G9} gave 0x{copy[i].Bits:X4}, expected 0x{expected:X4}");
        }
    }

    [Fact]
    public void ConversionMatchesTheReferenceOnVectorAndScalarPaths()
    {
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, float.MaxValue, -float.MaxValue, float.PositiveInfinity, float.NegativeInfinity, float.NaN,
            BitConverter.UInt32BitsToSingle(0x7F800001u), BitConverter.UInt32BitsToSingle(0xFFC00001u),
            float.Epsilon, 1e-40f, -1.1754942e-38f, 3.3961775e38f, 1f + 1f / 256, 1f + 3f / 256, 255.5f, 256.5f,
        };
        var rng = new Random(17);
        for (var i = 0; i < 50_000; i++)
            values.Add(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        for (uint m = 0; m < 128; m++)
            values.Add(BitConverter.UInt32BitsToSingle(0x3F800000u + (m << 16) + 0x8000u)); // every tie in [1, 2)
        // Odd lengths leave scalar tails after the vector body.
        foreach (var n in new[] { 1, 3, 7, 22, 127, values.Count })
        {
            var source = values.Take(n).ToArray();
            var copy = new Bf16[n];
            Bf16Convert.ToBf16(source, copy);
            AssertCopy(source, copy, $"n={n}");
            for (var i = 0; i < n; i++)
                Assert.True(float.IsNaN(source[i]) || copy[i].Bits == Bf16.RoundBits(source[i]), "host and device rounding differ");
        }
        Assert.Throws<ArgumentException>(() => Bf16Convert.ToBf16(new float[3], new Bf16[2]));
    }

    public static TheoryData<OptimizerKind, bool, int> Cases()
    {
        var data = new TheoryData<OptimizerKind, bool, int>();
        foreach (var kind in Enum.GetValues<OptimizerKind>())
            foreach (var halfGrads in new[] { false, true })
                foreach (var n in new[] { 1, 7, 22, 64, 1000003 })
                    data.Add(kind, halfGrads, n);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void OptimizersWriteTheBf16CopyInTheSamePass(OptimizerKind kind, bool halfGrads, int n)
    {
        var settings = new OptimizerSettings(kind, LearningRate: 1e-3f, Beta1: 0.9f, Beta2: 0.999f, Epsilon: 1e-8f, WeightDecay: 0.1f);
        var withBf16 = HostOptimizers.Create(settings);
        var withHalf = HostOptimizers.Create(settings);
        var p = TestData.Normal(1, n, scale: 0.5);
        var q = (float[])p.Clone();
        var stateP = new float[withBf16.StateFloatsPerParam * n];
        var stateQ = new float[withHalf.StateFloatsPerParam * n];
        var bf16 = new Bf16[n];
        var half = new Half[n];
        for (var step = 1; step <= 3; step++)
        {
            var g = TestData.Normal(step, n, scale: 0.01);
            for (var i = 5; i < n; i += 101) g[i] *= 300f;
            var lr = 1e-3f * step;
            var decay = step != 2;
            if (halfGrads)
            {
                var gh = g.Select(x => (Half)x).ToArray();
                withBf16.StepWithBf16Copy(p, gh, stateP, bf16, step, lr, decay);
                withHalf.Step(q, gh, stateQ, half, step, lr, decay);
            }
            else
            {
                withBf16.StepWithBf16Copy(p, g, stateP, bf16, step, lr, decay);
                withHalf.Step(q, g, stateQ, half, step, lr, decay);
            }
            // The copy's format does not touch the FP32 update.
            TensorAssert.Equal(q, p, $"param after step {step}");
            TensorAssert.Equal(stateQ, stateP, $"state after step {step}");
            AssertCopy(p, bf16, $"{kind} copy after step {step}");
        }
    }

    [Fact]
    public void WrongCopyLengthIsRejected()
    {
        var opt = HostOptimizers.Create(new OptimizerSettings(OptimizerKind.AdamW, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f));
        var e = Assert.Throws<ArgumentException>(() => opt.StepWithBf16Copy(new float[4], new float[4], new float[8], new Bf16[3], 1, 1e-3f, false));
        Assert.Contains("4", e.Message);
    }
}
