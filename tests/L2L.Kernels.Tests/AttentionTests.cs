// Multi-head attention (causal, padded by key lengths or by a per-key mask, combinations) against a double-precision
// reference and finite differences.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class AttentionTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    public sealed record Case(int B, int T, int C, int NH, bool Causal, int[]? KeyLengths, int[]? KeyMask = null)
    {
        public int QkvLength => B * T * 3 * C;
        public int OutputLength => B * T * C;
        public int ProbsLength => B * NH * T * T;

        public override string ToString() =>
            $"B={B} T={T} C={C} NH={NH} causal={Causal} keyLengths=[{(KeyLengths is null ? "none" : string.Join(",", KeyLengths))}]" +
            $" keyMask=[{(KeyMask is null ? "none" : string.Concat(KeyMask.Select(m => m != 0 ? '1' : '0')))}]";
    }

    // (B, T, C, NH): head sizes 4, 3, 4, 4, 5, 3; T covers 1, 3, 7, 22, 127.
    private static readonly (int B, int T, int C, int NH)[] ForwardShapes =
        [(1, 1, 4, 1), (2, 3, 6, 2), (1, 7, 12, 3), (2, 22, 8, 2), (2, 9, 15, 3), (1, 127, 6, 2)];

    private static readonly (int B, int T, int C, int NH)[] BackwardShapes =
        [(1, 1, 4, 1), (2, 3, 6, 2), (1, 7, 12, 3), (2, 5, 10, 2), (2, 22, 8, 2)];

    /// <summary>Every shape with every masking: causal, padded, causal and padded, none.</summary>
    private static IEnumerable<Case> Cases((int B, int T, int C, int NH)[] shapes)
    {
        foreach (var (b, t, c, nh) in shapes)
        {
            // Even sequences are padded to about half their length, odd ones are full.
            var lengths = Enumerable.Range(0, b).Select(i => i % 2 == 0 ? t / 2 + 1 : t).ToArray();
            yield return new Case(b, t, c, nh, true, null);
            yield return new Case(b, t, c, nh, false, lengths);
            yield return new Case(b, t, c, nh, true, lengths);
            yield return new Case(b, t, c, nh, false, null);
        }
    }

    private static (double Atol, double Rtol) Tolerance(DeviceKind kind) =>
        kind == DeviceKind.Cpu ? (1e-5, 1e-4) : (1e-4, 2e-3); // GPU exp is approximate

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 0;
        foreach (var cs in Cases(ForwardShapes))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var (output, probs) = RunForward(backend, cs, qkv);
            var (expectedOutput, expectedProbs) = AttentionReference.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            TensorAssert.Close(expectedProbs, probs, atol, rtol, $"probs {cs}");
            TensorAssert.Close(expectedOutput, output, atol, rtol, $"output {cs}");
            AssertProbabilityRows(cs, probs, kind == DeviceKind.Cpu ? 1e-5 : 1e-4);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardStaysFiniteWithLargeScores(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 8, 2), (1, 22, 12, 3)]))
        {
            var qkv = LargeScoreInput(cs, 5);
            var (output, probs) = RunForward(backend, cs, qkv);
            var (expectedOutput, expectedProbs) = AttentionReference.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            Assert.True(expectedProbs.Max() > 0.99 && MaxAbsScore(cs, qkv) > 500, "the input should give near one-hot rows from scores ~1e3");
            // A float score of ~1e3 carries an absolute error ~1e-4, which exp turns into a relative error of that size.
            TensorAssert.Close(expectedProbs, probs, 2e-3, 2e-3, $"probs {cs}");
            TensorAssert.Close(expectedOutput, output, 2e-3, 2e-3, $"output {cs}");
            AssertProbabilityRows(cs, probs, 1e-4);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void AllEqualLargeScoresGiveUniformProbabilities(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 6, 2)]))
        {
            var qkv = TestData.Normal(11, cs.QkvLength);
            for (var bt = 0; bt < cs.B * cs.T; bt++)
                for (var i = 0; i < 2 * cs.C; i++)
                    qkv[bt * 3 * cs.C + i] = 1000f; // every q.k/sqrt(hs) = 1e6*sqrt(hs)
            var (output, probs) = RunForward(backend, cs, qkv);
            var expectedProbs = new double[cs.ProbsLength];
            for (var b = 0; b < cs.B; b++)
                for (var h = 0; h < cs.NH; h++)
                    for (var t = 0; t < cs.T; t++)
                    {
                        var n = AttentionReference.VisibleKeys(cs.KeyLengths, b, t, cs.T, cs.Causal);
                        for (var j = 0; j < n; j++)
                            expectedProbs[((b * cs.NH + h) * cs.T + t) * cs.T + j] = 1.0 / n;
                    }
            TensorAssert.Close(expectedProbs, probs, 1e-6, 1e-6, $"probs {cs}");
            var (expectedOutput, _) = AttentionReference.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            TensorAssert.Close(expectedOutput, output, 1e-5, 1e-5, $"output {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void KeyLengthsAreClampedAndZeroLengthGivesZeros(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        foreach (var causal in new[] { false, true })
        {
            // Sequence 0 has no visible key; sequence 1's length exceeds T and acts as no padding.
            var cs = new Case(2, 5, 6, 2, causal, [0, 9]);
            var qkv = TestData.Normal(21, cs.QkvLength);
            var dout = TestData.Normal(22, cs.OutputLength);
            var (output, probs) = RunForward(backend, cs, qkv);
            var dQkv = RunBackward(backend, cs, qkv, probs, dout);
            var unpadded = cs with { KeyLengths = null };
            var (expectedOutput, expectedProbs) = AttentionReference.Forward(TestData.ToDouble(qkv), unpadded.KeyLengths, cs.B, cs.T, cs.C, cs.NH, causal);
            var expectedDQkv = AttentionReference.Backward(TestData.ToDouble(dout), TestData.ToDouble(qkv), expectedProbs, null, cs.B, cs.T, cs.C, cs.NH, causal);
            Array.Clear(expectedOutput, 0, cs.T * cs.C);
            Array.Clear(expectedProbs, 0, cs.NH * cs.T * cs.T);
            Array.Clear(expectedDQkv, 0, cs.T * 3 * cs.C);
            TensorAssert.Close(expectedProbs, probs, atol, rtol, $"probs {cs}");
            TensorAssert.Close(expectedOutput, output, atol, rtol, $"output {cs}");
            TensorAssert.Close(expectedDQkv, dQkv, atol, rtol, $"dQkv {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesFiniteDifferencesAndReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 100;
        foreach (var cs in Cases(BackwardShapes))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var dout = TestData.Normal(++seed, cs.OutputLength);
            var (_, probs) = RunForward(backend, cs, qkv);
            var dQkv = RunBackward(backend, cs, qkv, probs, dout);

            var x = TestData.ToDouble(qkv);
            var dy = TestData.ToDouble(dout);
            var numeric = FiniteDifference.Gradient(
                v => FiniteDifference.Dot(AttentionReference.Forward(v, cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal).Output, dy), x);
            var (_, refProbs) = AttentionReference.Forward(x, cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            var analytic = AttentionReference.Backward(dy, x, refProbs, cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);

            TensorAssert.Close(numeric, analytic, 1e-7, 1e-6, $"reference backward vs finite differences {cs}");
            TensorAssert.Close(numeric, dQkv, atol, rtol, $"dQkv vs finite differences {cs}");
            TensorAssert.Close(analytic, dQkv, atol, rtol, $"dQkv vs reference backward {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardWithLargeScoresMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 8, 2)]))
        {
            var qkv = LargeScoreInput(cs, 7);
            var dout = TestData.Normal(8, cs.OutputLength);
            var (_, probs) = RunForward(backend, cs, qkv);
            var dQkv = RunBackward(backend, cs, qkv, probs, dout);
            var x = TestData.ToDouble(qkv);
            var (_, refProbs) = AttentionReference.Forward(x, cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            var expected = AttentionReference.Backward(TestData.ToDouble(dout), x, refProbs, cs.KeyLengths, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            // Near one-hot rows: probability errors of ~1e-4 are multiplied by |q|, |k| ~ 30.
            var scale = expected.Max(Math.Abs);
            TensorAssert.Close(expected, dQkv, 5e-3 * scale, 5e-3, $"dQkv {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ResultsAreBitwiseReproducible(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var cs = new Case(2, 22, 8, 2, true, [13, 22]);
        var qkv = TestData.Normal(31, cs.QkvLength);
        var dout = TestData.Normal(32, cs.OutputLength);
        var (output1, probs1) = RunForward(backend, cs, qkv);
        var dQkv1 = RunBackward(backend, cs, qkv, probs1, dout);
        var (output2, probs2) = RunForward(backend, cs, qkv);
        var dQkv2 = RunBackward(backend, cs, qkv, probs2, dout);
        TensorAssert.Equal(output1, output2, "output");
        TensorAssert.Equal(probs1, probs2, "probs");
        TensorAssert.Equal(dQkv1, dQkv2, "dQkv");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void KernelsGiveTheSameResultsForAnyLaunch(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var accelerator = backend.Accelerator;
        var softmax = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(AttentionKernels.AttentionSoftmaxKernel);
        var values = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(AttentionKernels.AttentionValuesKernel);
        var scores = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionScoresBackwardKernel);
        var grads = accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionQkvBackwardKernel);
        var cs = new Case(2, 7, 6, 2, true, [4, 7], [1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0, 1, 0]);
        var d = new AttentionDims(cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        var qkv = TestData.Normal(41, cs.QkvLength);
        var dout = TestData.Normal(42, cs.OutputLength);
        var (expectedOutput, expectedProbs) = RunForward(backend, cs, qkv);
        var expectedDQkv = RunBackward(backend, cs, qkv, expectedProbs, dout);

        using var input = backend.Upload(qkv);
        using var dOutput = backend.Upload(dout);
        using var lengths = backend.Upload(cs.KeyLengths!);
        using var mask = backend.Upload(cs.KeyMask!);
        var s = backend.ComputeStream;
        // One thread in all, groups smaller than a warp, and more threads than work.
        foreach (var config in new[] { new KernelConfig(1, 1), new KernelConfig(3, 7), new KernelConfig(5, 32) })
        {
            using var output = backend.Upload(Filled(cs.OutputLength, float.NaN));
            using var probs = backend.Upload(Filled(cs.ProbsLength, float.NaN));
            using var dScores = backend.Upload(Filled(cs.ProbsLength, float.NaN));
            using var dQkv = backend.Upload(Filled(cs.QkvLength, float.NaN));
            softmax(s, config, probs.View, input.View, lengths.View, mask.View, d);
            values(s, config, output.View, probs.View, input.View, lengths.View, d);
            scores(s, config, dScores.View, dOutput.View, input.View, probs.View, lengths.View, d);
            grads(s, config, dQkv.View, dOutput.View, input.View, probs.View, dScores.View, lengths.View, mask.View, d);
            TensorAssert.Equal(expectedProbs, backend.Download(probs), $"probs {config}");
            TensorAssert.Equal(expectedOutput, backend.Download(output), $"output {config}");
            TensorAssert.Equal(expectedDQkv, backend.Download(dQkv), $"dQkv {config}");
        }
    }

    [Fact]
    public void BadArgumentsAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<AttentionOps>();
        var s = backend.ComputeStream;
        const int b = 2, t = 3, c = 6, nh = 2;
        using var qkv = backend.Zeros<float>(b * t * 3 * c);
        using var output = backend.Zeros<float>(b * t * c);
        using var probs = backend.Zeros<float>(b * nh * t * t);
        using var dQkv = backend.Zeros<float>(b * t * 3 * c);
        using var scratch = backend.Zeros<float>(AttentionOps.BackwardScratchLength(b, t, c, nh));
        using var lengths = backend.Zeros<int>(b + 1);
        using var mask = backend.Zeros<int>(b * t - 1);
        var none = ArrayView<int>.Empty;

        var e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, probs.View, qkv.View.SubView(1), none, b, t, c, nh, true));
        Assert.Contains("qkv", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, probs.View.SubView(1), qkv.View, none, b, t, c, nh, true));
        Assert.Contains("probs", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, probs.View, qkv.View, lengths.View, b, t, c, nh, false));
        Assert.Contains("keyLengths", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, probs.View, qkv.View, none, mask.View, b, t, c, nh, false));
        Assert.Contains("keyMask", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, dQkv.View, output.View, qkv.View, probs.View, scratch.View, none, mask.View, b, t, c, nh, false));
        Assert.Contains("keyMask", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, probs.View, qkv.View, none, b, t, c, 4, true));
        Assert.Contains("multiple", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Forward(s, output.View, probs.View, qkv.View, none, b, 0, c, nh, true));
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, dQkv.View, output.View, qkv.View, probs.View, scratch.View.SubView(1), none, b, t, c, nh, true));
        Assert.Contains("scratch", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, dQkv.View.SubView(1), output.View, qkv.View, probs.View, scratch.View, none, b, t, c, nh, true));
        Assert.Contains("dQkv", e.Message);
    }

    // (B, T, C, NH) for the key mask: odd T, head sizes 5, 3, 3, 4, 3.
    private static readonly (int B, int T, int C, int NH)[] MaskShapes =
        [(1, 1, 4, 1), (2, 7, 15, 3), (3, 5, 9, 3), (2, 22, 8, 2), (1, 127, 6, 2)];

    /// <summary>
    /// Bidirectional cases with a key mask that hides interior keys and a trailing run (BERT's padding); sequence 1,
    /// where present, has every key masked. Then the same mask with causal masking and key lengths on top.
    /// </summary>
    private static IEnumerable<Case> MaskedCases((int B, int T, int C, int NH)[] shapes)
    {
        foreach (var (b, t, c, nh) in shapes)
        {
            var mask = new int[b * t];
            for (var bi = 0; bi < b; bi++)
                for (var j = 0; j < t; j++)
                {
                    var trailing = j >= t - (t / 3 + bi % 2);   // the last third or so is padding
                    var interior = j % 3 == 1 && j < t / 2;      // and a few scattered keys before it
                    mask[bi * t + j] = bi == 1 || trailing || interior ? 0 : 1 + j % 2; // any nonzero value means "attend"
                }
            var lengths = Enumerable.Range(0, b).Select(i => i % 2 == 0 ? t - 1 : t).ToArray();
            yield return new Case(b, t, c, nh, false, null, mask);
            yield return new Case(b, t, c, nh, true, null, mask);
            yield return new Case(b, t, c, nh, false, lengths, mask);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardWithKeyMaskMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 200;
        foreach (var cs in MaskedCases(MaskShapes))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var (output, probs) = RunForward(backend, cs, qkv);
            var (expectedOutput, expectedProbs) = AttentionReference.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            TensorAssert.Close(expectedProbs, probs, atol, rtol, $"probs {cs}");
            TensorAssert.Close(expectedOutput, output, atol, rtol, $"output {cs}");
            for (var b = 0; b < cs.B; b++)
                for (var h = 0; h < cs.NH; h++)
                    for (var t = 0; t < cs.T; t++)
                    {
                        var row = ((b * cs.NH + h) * cs.T + t) * cs.T;
                        var sum = 0.0;
                        var any = false;
                        for (var j = 0; j < cs.T; j++)
                        {
                            if (AttentionReference.Visible(cs.KeyLengths, cs.KeyMask, b, t, j, cs.T, cs.Causal)) { sum += probs[row + j]; any = true; }
                            else Assert.True(probs[row + j] == 0f, $"{cs}: masked probs[b={b}, h={h}, t={t}, j={j}] = {probs[row + j]}");
                        }
                        // A query whose every key is masked gets a zero row (and, above, a zero output).
                        Assert.True(Math.Abs(sum - (any ? 1.0 : 0.0)) <= 1e-5, $"{cs}: row (b={b}, h={h}, t={t}) sums to {sum}");
                    }
        }
    }

    [Fact]
    public void TrailingKeyMaskGivesBitwiseTheResultsOfKeyLengths()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        foreach (var causal in new[] { false, true })
        {
            var byLengths = new Case(3, 9, 10, 2, causal, [9, 4, 0]);
            var mask = Enumerable.Range(0, 27).Select(i => i % 9 < byLengths.KeyLengths![i / 9] ? 1 : 0).ToArray();
            var byMask = new Case(3, 9, 10, 2, causal, null, mask);
            var qkv = TestData.Normal(51, byLengths.QkvLength);
            var dout = TestData.Normal(52, byLengths.OutputLength);
            var (output1, probs1) = RunForward(backend, byLengths, qkv);
            var (output2, probs2) = RunForward(backend, byMask, qkv);
            TensorAssert.Equal(probs1, probs2, $"probs causal={causal}");
            TensorAssert.Equal(output1, output2, $"output causal={causal}");
            TensorAssert.Equal(RunBackward(backend, byLengths, qkv, probs1, dout), RunBackward(backend, byMask, qkv, probs2, dout), $"dQkv causal={causal}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardWithKeyMaskMatchesFiniteDifferences(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 300;
        foreach (var cs in MaskedCases([(1, 1, 4, 1), (2, 7, 15, 3), (3, 5, 9, 3), (1, 13, 8, 2)]))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var dout = TestData.Normal(++seed, cs.OutputLength);
            var (_, probs) = RunForward(backend, cs, qkv);
            var dQkv = RunBackward(backend, cs, qkv, probs, dout);

            var x = TestData.ToDouble(qkv);
            var dy = TestData.ToDouble(dout);
            var numeric = FiniteDifference.Gradient(
                v => FiniteDifference.Dot(AttentionReference.Forward(v, cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal).Output, dy), x);
            var (_, refProbs) = AttentionReference.Forward(x, cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            var analytic = AttentionReference.Backward(dy, x, refProbs, cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            TensorAssert.Close(numeric, analytic, 1e-7, 1e-6, $"reference backward vs finite differences {cs}");
            TensorAssert.Close(numeric, dQkv, atol, rtol, $"dQkv vs finite differences {cs}");
            TensorAssert.Close(analytic, dQkv, atol, rtol, $"dQkv vs reference backward {cs}");
            // A masked key's k and v do not reach the output: their gradients are exactly zero.
            for (var b = 0; b < cs.B; b++)
                for (var j = 0; j < cs.T; j++)
                    if (cs.KeyMask![b * cs.T + j] == 0)
                        for (var col = cs.C; col < 3 * cs.C; col++)
                            Assert.True(dQkv[(b * cs.T + j) * 3 * cs.C + col] == 0f, $"{cs}: dk/dv of masked key (b={b}, j={j}) col {col}");
        }
    }

    /// <summary>q and k of magnitude ~30 so that scores reach ~1e3; v of magnitude 1.</summary>
    private static float[] LargeScoreInput(Case cs, int seed)
    {
        var qkv = TestData.Normal(seed, cs.QkvLength);
        for (var bt = 0; bt < cs.B * cs.T; bt++)
            for (var i = 0; i < 2 * cs.C; i++)
                qkv[bt * 3 * cs.C + i] *= 30f;
        return qkv;
    }

    private static double MaxAbsScore(Case cs, float[] qkv)
    {
        var hs = cs.C / cs.NH;
        var max = 0.0;
        for (var b = 0; b < cs.B; b++)
            for (var h = 0; h < cs.NH; h++)
                for (var t = 0; t < cs.T; t++)
                    for (var j = 0; j < cs.T; j++)
                    {
                        var dot = 0.0;
                        for (var i = 0; i < hs; i++)
                            dot += (double)qkv[(b * cs.T + t) * 3 * cs.C + h * hs + i] * qkv[(b * cs.T + j) * 3 * cs.C + cs.C + h * hs + i];
                        max = Math.Max(max, Math.Abs(dot) / Math.Sqrt(hs));
                    }
        return max;
    }

    /// <summary>Rows with visible keys sum to 1; masked entries are exactly 0.</summary>
    private static void AssertProbabilityRows(Case cs, float[] probs, double tolerance)
    {
        for (var b = 0; b < cs.B; b++)
            for (var h = 0; h < cs.NH; h++)
                for (var t = 0; t < cs.T; t++)
                {
                    var n = AttentionReference.VisibleKeys(cs.KeyLengths, b, t, cs.T, cs.Causal);
                    var row = ((b * cs.NH + h) * cs.T + t) * cs.T;
                    var sum = 0.0;
                    for (var j = 0; j < n; j++) sum += probs[row + j];
                    Assert.True(Math.Abs(sum - 1.0) <= tolerance, $"{cs}: row (b={b}, h={h}, t={t}) sums to {sum}");
                    for (var j = n; j < cs.T; j++)
                        Assert.True(probs[row + j] == 0f, $"{cs}: masked probs[b={b}, h={h}, t={t}, j={j}] = {probs[row + j]}");
                }
    }

    private static float[] Filled(int n, float value) => Enumerable.Repeat(value, n).ToArray();

    /// <summary>Runs the forward pass with NaN-filled outputs, so any element left unwritten fails the comparison.</summary>
    private static (float[] Output, float[] Probs) RunForward(Backend backend, Case cs, float[] qkv)
    {
        var ops = backend.Get<AttentionOps>();
        using var input = backend.Upload(qkv);
        using var output = backend.Upload(Filled(cs.OutputLength, float.NaN));
        using var probs = backend.Upload(Filled(cs.ProbsLength, float.NaN));
        using var lengths = cs.KeyLengths is null ? null : backend.Upload(cs.KeyLengths);
        using var mask = cs.KeyMask is null ? null : backend.Upload(cs.KeyMask);
        if (mask is null) // the overload without a mask, as GPT-2 calls it
            ops.Forward(backend.ComputeStream, output.View, probs.View, input.View, lengths?.View ?? ArrayView<int>.Empty,
                cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        else
            ops.Forward(backend.ComputeStream, output.View, probs.View, input.View, lengths?.View ?? ArrayView<int>.Empty, mask.View,
                cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        return (backend.Download(output), backend.Download(probs));
    }

    /// <summary>Runs the backward pass with NaN-filled dQkv and scratch: dQkv must be assigned, not accumulated.</summary>
    private static float[] RunBackward(Backend backend, Case cs, float[] qkv, float[] probs, float[] dout)
    {
        var ops = backend.Get<AttentionOps>();
        using var input = backend.Upload(qkv);
        using var savedProbs = backend.Upload(probs);
        using var dOutput = backend.Upload(dout);
        using var dQkv = backend.Upload(Filled(cs.QkvLength, float.NaN));
        using var scratch = backend.Upload(Filled((int)AttentionOps.BackwardScratchLength(cs.B, cs.T, cs.C, cs.NH), float.NaN));
        using var lengths = cs.KeyLengths is null ? null : backend.Upload(cs.KeyLengths);
        using var mask = cs.KeyMask is null ? null : backend.Upload(cs.KeyMask);
        if (mask is null)
            ops.Backward(backend.ComputeStream, dQkv.View, dOutput.View, input.View, savedProbs.View, scratch.View,
                lengths?.View ?? ArrayView<int>.Empty, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        else
            ops.Backward(backend.ComputeStream, dQkv.View, dOutput.View, input.View, savedProbs.View, scratch.View,
                lengths?.View ?? ArrayView<int>.Empty, mask.View, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        return backend.Download(dQkv);
    }
}
