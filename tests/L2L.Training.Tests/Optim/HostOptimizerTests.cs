// Host optimizers against the scalar PyTorch-order references, and the properties the param server relies on:
// bit-identical results for any thread count, exact resume, FP16 copy-out, per-slice decay, concurrent slices.
using L2L.TestSupport;
using L2L.Training.Optim;
using Xunit;

namespace L2L.Training.Tests.Optim;

public sealed class HostOptimizerTests
{
    private static readonly int[] Sizes = [1, 7, 22, 64, 1000003];

    public static TheoryData<OptimizerKind, bool, int> Cases()
    {
        var data = new TheoryData<OptimizerKind, bool, int>();
        foreach (var kind in Enum.GetValues<OptimizerKind>())
            foreach (var halfGrads in new[] { false, true })
                foreach (var n in Sizes)
                    data.Add(kind, halfGrads, n);
        return data;
    }

    private static OptimizerSettings Settings(OptimizerKind kind, float weightDecay = 0.1f) =>
        new(kind, LearningRate: 1e-3f, Beta1: 0.9f, Beta2: 0.999f, Epsilon: 1e-8f, WeightDecay: weightDecay);

    /// <summary>Learning rate, decay flag and gradients vary from step to step, as a schedule and a real model would.</summary>
    private static float LearningRate(int step) => 1e-3f * (1f + 0.25f * step);

    private static float[] Gradient(int seed, int n, int step)
    {
        var g = TestData.Normal(seed * 7919 + step, n, scale: 0.01);
        // Exact zeros and a few large values exercise the moments and the FP16 path at its edges.
        for (var i = 0; i < n; i += 13) g[i] = 0f;
        for (var i = 5; i < n; i += 101) g[i] *= 300f;
        return g;
    }

    private static Half[] ToHalf(float[] x)
    {
        var h = new Half[x.Length];
        for (var i = 0; i < x.Length; i++) h[i] = (Half)x[i];
        return h;
    }

    private static float[] Widen(Half[] h)
    {
        var x = new float[h.Length];
        for (var i = 0; i < h.Length; i++) x[i] = (float)h[i];
        return x;
    }

    /// <summary>Runs steps [from, to] of an optimizer on one slice held in the given arrays.</summary>
    private static void RunSteps(IHostOptimizer opt, float[] p, float[] state, Half[] half, bool halfGrads, int seed, int from, int to)
    {
        for (var step = from; step <= to; step++)
        {
            var g = Gradient(seed, p.Length, step);
            var decay = step % 3 != 2;
            if (halfGrads) opt.Step(p, ToHalf(g), state, half, step, LearningRate(step), decay);
            else opt.Step(p, g, state, half, step, LearningRate(step), decay);
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesScalarReferenceElementByElement(OptimizerKind kind, bool halfGrads, int n)
    {
        const int steps = 4;
        var settings = Settings(kind);
        var opt = HostOptimizers.Create(settings);
        var p = TestData.Normal(1, n, scale: 0.5);
        var state = new float[opt.StateFloatsPerParam * n];
        var half = new Half[n];

        var rp = (float[])p.Clone();
        var rm = new float[n];
        var rv = new float[n];
        for (var step = 1; step <= steps; step++)
        {
            var g = Gradient(2, n, step);
            var decay = step % 3 != 2;
            if (halfGrads)
            {
                var gh = ToHalf(g);
                opt.Step(p, gh, state, half, step, LearningRate(step), decay);
                ReferenceOptimizers.Step(settings, rp, Widen(gh), rm, rv, step, LearningRate(step), decay);
            }
            else
            {
                opt.Step(p, g, state, half, step, LearningRate(step), decay);
                ReferenceOptimizers.Step(settings, rp, g, rm, rv, step, LearningRate(step), decay);
            }

            if (kind == OptimizerKind.Lamb)
            {
                // The trust ratio's norms are summed in another order than the reference's, so the scale may differ in the last bit.
                TensorAssert.Close(TestData.ToDouble(rp), p, atol: 1e-7, rtol: 1e-6, $"param after step {step}");
            }
            else
            {
                TensorAssert.Equal(rp, p, $"param after step {step}");
            }
            if (opt.StateFloatsPerParam == 2)
            {
                TensorAssert.Equal(rm, state.AsSpan(0, n), $"m after step {step}");
                TensorAssert.Equal(rv, state.AsSpan(n, n), $"v after step {step}");
            }
            AssertHalfCopy(p, half, $"half after step {step}");
        }
    }

    private static void AssertHalfCopy(ReadOnlySpan<float> p, ReadOnlySpan<Half> half, string what)
    {
        for (var i = 0; i < p.Length; i++)
        {
            if (BitConverter.HalfToUInt16Bits(half[i]) != BitConverter.HalfToUInt16Bits((Half)p[i]))
                Assert.Fail($"{what}: [{i}] is {half[i]}, (Half){p[i]:G9} is {(Half)p[i]}");
        }
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Lamb)]
    public void ResultsAreBitIdenticalForEveryThreadCount(OptimizerKind kind)
    {
        const int n = 300_017;
        float[]? first = null, firstState = null;
        foreach (var threads in new[] { 1, 2, 3, 8 })
        {
            foreach (var halfGrads in new[] { false, true })
            {
                var opt = HostOptimizers.Create(Settings(kind), threads);
                var p = TestData.Normal(3, n, scale: 0.5);
                var state = new float[opt.StateFloatsPerParam * n];
                RunSteps(opt, p, state, [], halfGrads, seed: 4, from: 1, to: 3);
                if (halfGrads) continue;
                if (first is null)
                {
                    first = p;
                    firstState = state;
                    continue;
                }
                TensorAssert.Equal(first, p, $"param, {threads} threads vs 1");
                TensorAssert.Equal(firstState!, state, $"state, {threads} threads vs 1");
            }
        }
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd, 64)]
    [InlineData(OptimizerKind.AdamW, 22)]
    [InlineData(OptimizerKind.AdamW, 1000003)]
    [InlineData(OptimizerKind.Lamb, 7)]
    [InlineData(OptimizerKind.Lamb, 1000003)]
    public void ResumingFromCopiedStateContinuesExactly(OptimizerKind kind, int n)
    {
        var settings = Settings(kind);
        var straight = HostOptimizers.Create(settings);
        var p = TestData.Normal(5, n, scale: 0.5);
        var state = new float[straight.StateFloatsPerParam * n];
        RunSteps(straight, p, state, [], halfGrads: false, seed: 6, from: 1, to: 5);

        var before = HostOptimizers.Create(settings);
        var p3 = TestData.Normal(5, n, scale: 0.5);
        var state3 = new float[before.StateFloatsPerParam * n];
        RunSteps(before, p3, state3, [], halfGrads: false, seed: 6, from: 1, to: 3);

        // A checkpoint carries only param and state; the step count comes back as the step argument.
        var resumedP = (float[])p3.Clone();
        var resumedState = (float[])state3.Clone();
        var after = HostOptimizers.Create(settings, threads: 3);
        RunSteps(after, resumedP, resumedState, [], halfGrads: false, seed: 6, from: 4, to: 5);

        TensorAssert.Equal(p, resumedP, "param");
        TensorAssert.Equal(state, resumedState, "state");
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Lamb)]
    public void DecayFalseLeavesWeightDecayOut(OptimizerKind kind)
    {
        const int n = 100_003;
        var withDecay = HostOptimizers.Create(Settings(kind, weightDecay: 0.1f));
        var withoutDecay = HostOptimizers.Create(Settings(kind, weightDecay: 0f));

        var p0 = TestData.Normal(7, n, scale: 0.5);
        var g = Gradient(8, n, 1);
        var a = (float[])p0.Clone();
        var b = (float[])p0.Clone();
        var c = (float[])p0.Clone();
        var sa = new float[withDecay.StateFloatsPerParam * n];
        var sb = new float[withDecay.StateFloatsPerParam * n];
        var sc = new float[withDecay.StateFloatsPerParam * n];
        for (var step = 1; step <= 2; step++)
        {
            withDecay.Step(a, g, sa, [], step, 0.01f, decay: false);
            withoutDecay.Step(b, g, sb, [], step, 0.01f, decay: true);
            withDecay.Step(c, g, sc, [], step, 0.01f, decay: true);
        }
        TensorAssert.Equal(b, a, "decay: false with wd 0.1 vs wd 0");
        TensorAssert.Equal(sb, sa, "state");
        var differing = 0;
        for (var i = 0; i < n; i++) if (a[i] != c[i]) differing++;
        Assert.True(differing > n / 2, $"decay: true changed only {differing} of {n} weights");
    }

    [Fact]
    public void LambTrustRatioIsOneWhenWeightsAreZero()
    {
        // ||w|| = 0: the update is applied unscaled, p = -lr * mhat / (sqrt(vhat) + eps) = -lr * g / (|g| + eps) at step 1.
        var opt = HostOptimizers.Create(Settings(OptimizerKind.Lamb));
        var p = new float[50];
        var g = TestData.Normal(9, 50, scale: 0.1);
        var state = new float[100];
        opt.Step(p, g, state, [], 1, 0.01f, decay: true);
        var expected = new float[50];
        ReferenceOptimizers.Lamb(Settings(OptimizerKind.Lamb), expected, g, new float[50], new float[50], 1, 0.01f, true);
        TensorAssert.Equal(expected, p, "param");
        for (var i = 0; i < 50; i++) Assert.InRange(p[i], -0.0100001f, 0.0100001f);
        Assert.Contains(p, x => Math.Abs(x) > 0.0099f);
    }

    [Fact]
    public void LambTrustRatioIsOneWhenUpdateIsZero()
    {
        // Fresh state, zero gradient and no decay: the update is zero, the ratio 1 (not 0/0), the weights unchanged.
        var opt = HostOptimizers.Create(Settings(OptimizerKind.Lamb));
        var p = TestData.Normal(10, 70_000, scale: 0.5);
        var before = (float[])p.Clone();
        var state = new float[140_000];
        var half = new Half[70_000];
        opt.Step(p, new float[70_000], state, half, 1, 0.01f, decay: false);
        TensorAssert.Equal(before, p, "param");
        AssertHalfCopy(p, half, "half");
    }

    [Fact]
    public void LambScalesTheUpdateToTheWeightNorm()
    {
        // With a constant gradient g at step 1 and no decay, u = g / (|g| + eps) ~ sign(g), so ||u|| ~ sqrt(n):
        // the step moves every weight by lr * ||w|| / sqrt(n).
        const int n = 40_000;
        var opt = HostOptimizers.Create(Settings(OptimizerKind.Lamb));
        var p = new float[n];
        Array.Fill(p, 3f);
        var g = new float[n];
        Array.Fill(g, 0.5f);
        opt.Step(p, g, new float[2 * n], [], 1, 0.1f, decay: false);
        // ||w|| = 3 sqrt(n), so each weight moves by lr * 3.
        foreach (var x in p) Assert.Equal(3f - 0.3f, x, 5);
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Lamb)]
    public void ConcurrentStepsOnDisjointSlicesMatchSequentialSteps(OptimizerKind kind)
    {
        int[] sizes = [1, 22, 5000, 40_000, 250_001, 7, 131_072, 64];
        var opt = HostOptimizers.Create(Settings(kind), threads: 4);
        var seqP = sizes.Select((n, k) => TestData.Normal(20 + k, n, scale: 0.5)).ToArray();
        var parP = seqP.Select(x => (float[])x.Clone()).ToArray();
        var seqS = sizes.Select(n => new float[opt.StateFloatsPerParam * n]).ToArray();
        var parS = sizes.Select(n => new float[opt.StateFloatsPerParam * n]).ToArray();
        var seqH = sizes.Select(n => new Half[n]).ToArray();
        var parH = sizes.Select(n => new Half[n]).ToArray();
        var grads = sizes.Select((n, k) => Gradient(40 + k, n, 1)).ToArray();

        for (var step = 1; step <= 3; step++)
        {
            for (var k = 0; k < sizes.Length; k++)
                opt.Step(seqP[k], grads[k], seqS[k], seqH[k], step, 0.01f, decay: k % 2 == 0);
            var threads = Enumerable.Range(0, sizes.Length).Select(k => new Thread(() =>
                opt.Step(parP[k], grads[k], parS[k], parH[k], step, 0.01f, decay: k % 2 == 0))).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
        }
        for (var k = 0; k < sizes.Length; k++)
        {
            TensorAssert.Equal(seqP[k], parP[k], $"param of slice {k}");
            TensorAssert.Equal(seqS[k], parS[k], $"state of slice {k}");
            Assert.True(seqH[k].AsSpan().SequenceEqual(parH[k]), $"half of slice {k}");
        }
    }

    [Theory]
    [InlineData(OptimizerKind.Sgd)]
    [InlineData(OptimizerKind.AdamW)]
    [InlineData(OptimizerKind.Lamb)]
    public void StepsAllocateNothingOnTheCallingThreadOnceWarm(OptimizerKind kind)
    {
        var opt = HostOptimizers.Create(Settings(kind), threads: 4);
        foreach (var n in new[] { 1000, 500_000 })
        {
            var p = TestData.Normal(11, n, scale: 0.5);
            var g = Gradient(12, n, 1);
            var gh = ToHalf(g);
            var state = new float[opt.StateFloatsPerParam * n];
            var half = new Half[n];
            for (var step = 1; step <= 3; step++)
            {
                opt.Step(p, g, state, half, step, 1e-3f, true);
                opt.Step(p, gh, state, half, step, 1e-3f, true);
            }
            // A job stays out of the pool until every helper queued for it has run, so on a loaded machine (CI
            // runs the test assemblies side by side) the pool may grow by a few jobs of about 200 bytes during a
            // run. A per-step buffer would show in every run, so the quietest of three runs is what counts. Any
            // per-step buffer would be at least n floats (4 KB to 2 MB per step, 160 KB to 80 MB in all), so
            // 2 KB in 40 steps still proves that steps do not allocate.
            var allocated = long.MaxValue;
            var nextStep = 4;
            for (var run = 0; run < 3 && allocated > 2048; run++)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                for (var i = 0; i < 20; i++, nextStep++)
                {
                    opt.Step(p, g, state, half, nextStep, 1e-3f, true);
                    opt.Step(p, gh, state, half, nextStep, 1e-3f, false);
                }
                allocated = Math.Min(allocated, GC.GetAllocatedBytesForCurrentThread() - before);
            }
            Assert.True(allocated <= 2048, $"{kind}, {n} params: 40 steps allocated {allocated} bytes");
        }
    }

    [Fact]
    public void BadArgumentsAreRejectedWithClearMessages()
    {
        var adam = HostOptimizers.Create(Settings(OptimizerKind.AdamW));
        var p = new float[10];
        Assert.Contains("grad", Assert.Throws<ArgumentException>(() => adam.Step(p, new float[9], new float[20], [], 1, 1e-3f, true)).Message);
        Assert.Contains("state", Assert.Throws<ArgumentException>(() => adam.Step(p, new float[10], new float[10], [], 1, 1e-3f, true)).Message);
        Assert.Contains("half", Assert.Throws<ArgumentException>(() => adam.Step(p, new float[10], new float[20], new Half[3], 1, 1e-3f, true)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => adam.Step(p, new float[10], new float[20], [], 0, 1e-3f, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => HostOptimizers.Create(Settings(OptimizerKind.AdamW), threads: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => HostOptimizers.Create(new OptimizerSettings(OptimizerKind.AdamW, 1e-3f, Beta1: 1f)));
        Assert.Equal(0, HostOptimizers.Create(Settings(OptimizerKind.Sgd)).StateFloatsPerParam);
        Assert.Equal(2, HostOptimizers.Create(Settings(OptimizerKind.Lamb)).StateFloatsPerParam);
    }
}
