// 16-bit LayerNorm, cross-entropy and embedding kernels against double references, with bounds from the storage
// precision; their statistics, losses and parameter gradients stay FP32.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

/// <summary>
/// As everywhere in the 16-bit tests (see <see cref="Sixteen"/>), inputs are rounded to the format first and the
/// reference is computed from them: a 16-bit result is off by its rounding <c>u |y|</c> plus the FP32 kernel's own
/// error, for which these tests take the FP32 kernels' tolerances (LayerNormTests, CrossEntropyTests: 1e-5 relative
/// and 1e-5 absolute on the CPU accelerator, 1e-3 relative on GPUs); FP32 results (statistics, losses, parameter
/// gradients) are held to the FP32 tolerance alone. The FP32 instantiation of each kernel is the one whose
/// finite-difference checks run in LayerNormTests / CrossEntropyTests / EmbeddingTests.
/// </summary>
public sealed class Rows16Tests(BackendFixture fixture)
{
    private static readonly (int N, int C)[] Shapes = [(1, 1), (3, 7), (7, 22), (22, 127), (127, 3)];

    private static double Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-3;

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void LayerNormForwardAndBackwardMatchReference(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<LayerNormOps>();
        var s = backend.ComputeStream;
        const float eps = 1e-5f;
        var seed = 70;
        foreach (var (n, c) in Shapes)
            foreach (var accumulate in new[] { false, true })
            {
                // A common offset of 30 per row: the FP32 two-pass statistics must not lose the 16-bit inputs' spread.
                var x = Sixteen.Round(format, TestData.Normal(seed++, n * c, 2.0, 30.0));
                var w = Sixteen.Round(format, TestData.Normal(seed++, c, 1.0, 1.0));
                var b = Sixteen.Round(format, TestData.Normal(seed++, c));
                var dy = Sixteen.Round(format, TestData.Normal(seed++, n * c));
                var dx0 = Sixteen.Round(format, TestData.Normal(seed++, n * c));
                var dw0 = TestData.Normal(seed++, c);
                var db0 = TestData.Normal(seed++, c);
                using var dX = new Buffer16(backend, format, x);
                using var dW = new Buffer16(backend, format, w);
                using var dB = new Buffer16(backend, format, b);
                using var dDy = new Buffer16(backend, format, dy);
                using var dDx = new Buffer16(backend, format, dx0);
                using var y = new Buffer16(backend, format, n * c);
                using var mean = backend.Zeros<float>(n);
                using var rstd = backend.Zeros<float>(n);
                using var gW = backend.Upload(dw0);
                using var gB = backend.Upload(db0);
                if (format == Store16.Bf16)
                {
                    ops.Forward(s, y.Bf, mean.View, rstd.View, dX.Bf, dW.Bf, dB.Bf, n, c, eps);
                    ops.Backward(s, dDx.Bf, gW.View, gB.View, dDy.Bf, dX.Bf, dW.Bf, mean.View, rstd.View, n, c, accumulate);
                }
                else
                {
                    ops.Forward(s, y.Fp, mean.View, rstd.View, dX.Fp, dW.Fp, dB.Fp, n, c, eps);
                    ops.Backward(s, dDx.Fp, gW.View, gB.View, dDy.Fp, dX.Fp, dW.Fp, mean.View, rstd.View, n, c, accumulate);
                }
                var what = $"{format} n={n} c={c} acc={accumulate}";
                var xd = TestData.ToDouble(x);
                var wd = TestData.ToDouble(w);
                var forward = LayerNormReference.Forward(xd, wd, TestData.ToDouble(b), n, c, eps, out var mu, out var rs);
                TensorAssert.Close(mu, backend.Download(mean), 1e-5, Rtol(kind), "mean " + what);
                TensorAssert.Close(rs, backend.Download(rstd), 1e-5, Rtol(kind), "rstd " + what);
                Sixteen.AssertWithin(forward, y.Download(), Sixteen.Bound(format, forward, Rtol(kind), 1e-5), "output " + what);
                var (dIn, dWeight, dBias) = LayerNormReference.Backward(TestData.ToDouble(dy), xd, wd, n, c, eps);
                if (accumulate)
                    for (var i = 0; i < dIn.Length; i++) dIn[i] += dx0[i];
                for (var j = 0; j < c; j++) { dWeight[j] += dw0[j]; dBias[j] += db0[j]; }
                Sixteen.AssertWithin(dIn, dDx.Download(), Sixteen.Bound(format, dIn, Rtol(kind), 1e-5), "dInput " + what);
                TensorAssert.Close(dWeight, backend.Download(gW), 1e-5, Rtol(kind), "dWeight " + what);
                TensorAssert.Close(dBias, backend.Download(gB), 1e-5, Rtol(kind), "dBias " + what);
            }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void CrossEntropyMatchesReferenceWithFp32Losses(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<CrossEntropyOps>();
        var s = backend.ComputeStream;
        var seed = 170;
        foreach (var (n, v) in new[] { (1, 1), (3, 7), (7, 22), (22, 127), (3, 1000) })
        {
            var logits = Sixteen.Round(format, TestData.Normal(seed++, n * v, 4.0));
            var rng = new Random(seed++);
            var targets = Enumerable.Range(0, n).Select(_ => rng.Next(v)).ToArray();
            if (n > 2) targets[1] = -1; // ignored
            const float scale = 0.25f;
            using var dLogits = new Buffer16(backend, format, logits);
            using var onlyLogits = new Buffer16(backend, format, logits);
            using var dTargets = backend.Upload(targets);
            using var losses = backend.Zeros<float>(n);
            using var forwardLosses = backend.Zeros<float>(n);
            if (format == Store16.Bf16)
            {
                ops.Forward(s, forwardLosses.View, onlyLogits.Bf, dTargets.View, n, v);
                ops.ForwardBackward(s, losses.View, dLogits.Bf, dLogits.Bf, dTargets.View, n, v, scale); // in place
            }
            else
            {
                ops.Forward(s, forwardLosses.View, onlyLogits.Fp, dTargets.View, n, v);
                ops.ForwardBackward(s, losses.View, dLogits.Fp, dLogits.Fp, dTargets.View, n, v, scale);
            }
            var what = $"{format} n={n} v={v}";
            var xd = TestData.ToDouble(logits);
            var expectedLosses = CrossEntropyReference.Losses(xd, targets, n, v);
            TensorAssert.Close(expectedLosses, backend.Download(losses), 1e-5, Rtol(kind), "losses " + what);
            TensorAssert.Close(expectedLosses, backend.Download(forwardLosses), 1e-5, Rtol(kind), "forward losses " + what);
            var expected = CrossEntropyReference.DLogits(xd, targets, n, v, scale);
            Sixteen.AssertWithin(expected, dLogits.Download(), Sixteen.Bound(format, expected, Rtol(kind), 1e-6), "dLogits " + what);
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void CrossEntropyOfExtremeLogits(DeviceKind kind, Store16 format)
    {
        // Logits near the top of each format's range (FP16: 65504; BF16: 3e38, the FP32 range) and a tie row: the max
        // is subtracted in FP32 before exponentiating, so the loss stays finite and exact to FP32 rounding.
        var backend = fixture.Get(kind);
        var ops = backend.Get<CrossEntropyOps>();
        var big = format == Store16.Fp16 ? 65504f : 3e38f;
        float[] raw = [big, big * 0.999f, -big, 0f, 7f, 7f, 7f, 7f];
        var logits = Sixteen.Round(format, raw);
        int[] targets = [1, 2];
        using var d = new Buffer16(backend, format, logits);
        using var dTargets = backend.Upload(targets);
        using var losses = backend.Zeros<float>(2);
        if (format == Store16.Bf16) ops.ForwardBackward(backend.ComputeStream, losses.View, d.Bf, d.Bf, dTargets.View, 2, 4, 1f);
        else ops.ForwardBackward(backend.ComputeStream, losses.View, d.Fp, d.Fp, dTargets.View, 2, 4, 1f);
        var xd = TestData.ToDouble(logits);
        TensorAssert.Close(CrossEntropyReference.Losses(xd, targets, 2, 4), backend.Download(losses), 1e-5, Rtol(kind), $"{format} losses");
        var expected = CrossEntropyReference.DLogits(xd, targets, 2, 4, 1.0);
        Sixteen.AssertWithin(expected, d.Download(), Sixteen.Bound(format, expected, Rtol(kind), 1e-6), $"{format} dLogits");
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void EmbeddingForwardAndFp32BackwardMatchReference(DeviceKind kind, Store16 format)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        var s = backend.ComputeStream;
        const int vocab = 11;
        var seed = 270;
        foreach (var (b, t, c) in new[] { (1, 1, 1), (1, 3, 7), (2, 7, 3), (3, 22, 5), (1, 127, 2) })
        {
            var maxT = t + 2;
            var rng = new Random(seed++);
            var tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(0, 4)).ToArray();
            tokens[^1] = vocab - 1;
            var wte = Sixteen.Round(format, TestData.Normal(seed++, vocab * c, 10.0));
            var wpe = Sixteen.Round(format, TestData.Normal(seed++, maxT * c));
            var dOut = Sixteen.Round(format, TestData.Normal(seed++, b * t * c));
            var dWte0 = TestData.Normal(seed++, vocab * c);
            var dWpe0 = TestData.Normal(seed++, maxT * c);
            var plan = new int[EmbeddingScatterPlan.Length(tokens.Length)];
            var segments = EmbeddingScatterPlan.Build(tokens, plan);
            using var dTokens = backend.Upload(tokens);
            using var dPlan = backend.Upload(plan);
            using var dWte = new Buffer16(backend, format, wte);
            using var dWpe = new Buffer16(backend, format, wpe);
            using var dDout = new Buffer16(backend, format, dOut);
            using var output = new Buffer16(backend, format, b * t * c);
            using var gWte = backend.Upload(dWte0);
            using var gWpe = backend.Upload(dWpe0);
            if (format == Store16.Bf16)
            {
                ops.Forward(s, output.Bf, dTokens.View, dWte.Bf, dWpe.Bf, b, t, c);
                ops.Backward(s, gWte.View, gWpe.View, dDout.Bf, dPlan.View, segments, b, t, c);
            }
            else
            {
                ops.Forward(s, output.Fp, dTokens.View, dWte.Fp, dWpe.Fp, b, t, c);
                ops.Backward(s, gWte.View, gWpe.View, dDout.Fp, dPlan.View, segments, b, t, c);
            }
            var what = $"{format} b={b} t={t} c={c}";
            var forward = EmbeddingReference.Forward(tokens, TestData.ToDouble(wte), TestData.ToDouble(wpe), b, t, c);
            // The FP32 sum of two 16-bit values is exact here; only the output rounds.
            Sixteen.AssertWithin(forward, output.Download(), Sixteen.Bound(format, forward, 0), "forward " + what);
            var (eWte, eWpe) = EmbeddingReference.Backward(TestData.ToDouble(dOut), tokens, b, t, c, vocab, maxT);
            for (var i = 0; i < eWte.Length; i++) eWte[i] += dWte0[i];
            for (var i = 0; i < eWpe.Length; i++) eWpe[i] += dWpe0[i];
            var rows = b * t + 1;
            TensorAssert.Close(eWte, backend.Download(gWte), 1e-6, rows * Sixteen.Fp32 * 8, "dWte " + what);
            TensorAssert.Close(eWpe, backend.Download(gWpe), 1e-6, rows * Sixteen.Fp32 * 8, "dWpe " + what);
        }
    }

    [Theory]
    [MemberData(nameof(Sixteen.Cases), MemberType = typeof(Sixteen))]
    public void SumsOfSixteenBitInputsAccumulateInFp32(DeviceKind kind, Store16 format)
    {
        // FP32 sums of n 16-bit values: within (n - 1) 2^-24 sum |x| of the exact sum, far tighter than a 16-bit
        // accumulator could be; FP16 inputs near 65504 square to ~4e9, which only an FP32 accumulator holds.
        var backend = fixture.Get(kind);
        var ops = backend.Get<ReduceOps>();
        using var partials = backend.Zeros<float>(ReduceOps.PartialsLength(backend));
        using var result = backend.Zeros<float>(2);
        foreach (var n in new[] { 1, 3, 7, 22, 127, 5000 })
        {
            var x = Sixteen.Round(format, TestData.Normal(n, n, 100.0));
            if (format == Store16.Fp16) x[0] = 65504f;
            using var d = new Buffer16(backend, format, x);
            if (format == Store16.Bf16)
            {
                ops.Sum(backend.ComputeStream, result.View.SubView(0, 1), d.Bf, partials.View);
                ops.SumOfSquares(backend.ComputeStream, result.View.SubView(1, 1), d.Bf, partials.View);
            }
            else
            {
                ops.Sum(backend.ComputeStream, result.View.SubView(0, 1), d.Fp, partials.View);
                ops.SumOfSquares(backend.ComputeStream, result.View.SubView(1, 1), d.Fp, partials.View);
            }
            var got = backend.Download(result);
            var sum = x.Sum(v => (double)v);
            var squares = x.Sum(v => (double)v * v);
            var abs = x.Sum(v => Math.Abs((double)v));
            Assert.True(Math.Abs(got[0] - sum) <= n * Sixteen.Fp32 * abs + 1e-30, $"{format} n={n}: sum {got[0]} vs {sum}");
            Assert.True(Math.Abs(got[1] - squares) <= (n + 1) * Sixteen.Fp32 * squares, $"{format} n={n}: squares {got[1]} vs {squares}");
        }
    }
}
