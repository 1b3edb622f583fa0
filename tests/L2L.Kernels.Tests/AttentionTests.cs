// Multi-head attention (causal, key lengths, key mask, combined) on both kernel paths, against a double-precision
// reference and finite differences.
using ILGPU;
using ILGPU.Runtime;
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using Xunit;
using Ref = L2L.Kernels.Tests.MaskedAttentionReference;

namespace L2L.Kernels.Tests;

public sealed class AttentionTests(BackendFixture fixture)
{
    /// <summary>Every device kind with both kernel families; the tiled one runs on the CPU accelerator's GPU-shaped groups.</summary>
    public static TheoryData<DeviceKind, AttentionPath> DevicesAndPaths()
    {
        var data = new TheoryData<DeviceKind, AttentionPath>();
        foreach (var kind in TestSupport.Devices.All)
            foreach (var path in new[] { AttentionPath.Rows, AttentionPath.Tiled })
                data.Add(kind, path);
        return data;
    }

    public sealed record Case(int B, int T, int C, int NH, bool Causal, int[]? KeyLengths, int[]? KeyMask)
    {
        public int QkvLength => B * T * 3 * C;
        public int OutputLength => B * T * C;
        public int LseLength => B * NH * T;

        public override string ToString() =>
            $"B={B} T={T} C={C} NH={NH} causal={Causal} keyLengths=[{(KeyLengths is null ? "none" : string.Join(",", KeyLengths))}] " +
            $"keyMask={(KeyMask is null ? "none" : string.Concat(KeyMask.Select(m => m == 0 ? '0' : '1')))}";
    }

    // (B, T, C, NH): head sizes 4, 3, 4, 4, 5, 3, 64, 7; T covers 1, 3, 7, 22, 127 and tile edges 32, 33.
    private static readonly (int B, int T, int C, int NH)[] ForwardShapes =
        [(1, 1, 4, 1), (2, 3, 6, 2), (1, 7, 12, 3), (2, 22, 8, 2), (2, 9, 15, 3), (1, 127, 6, 2), (1, 33, 64, 1), (2, 32, 7, 1)];

    private static readonly (int B, int T, int C, int NH)[] BackwardShapes =
        [(1, 1, 4, 1), (2, 3, 6, 2), (1, 7, 12, 3), (2, 5, 10, 2), (2, 22, 8, 2), (1, 37, 6, 2)];

    /// <summary>Every shape with every masking: causal, lengths, mask, causal + lengths + mask, none.</summary>
    private static IEnumerable<Case> Cases((int B, int T, int C, int NH)[] shapes)
    {
        foreach (var (b, t, c, nh) in shapes)
        {
            // Even sequences are padded to about half their length, odd ones are full.
            var lengths = Enumerable.Range(0, b).Select(i => i % 2 == 0 ? t / 2 + 1 : t).ToArray();
            // Every third key masked, and sequence 1 (if any) also loses its first key.
            var mask = Enumerable.Range(0, b * t).Select(i => i % t % 3 == 2 || i == t ? 0 : 1).ToArray();
            yield return new Case(b, t, c, nh, true, null, null);
            yield return new Case(b, t, c, nh, false, lengths, null);
            yield return new Case(b, t, c, nh, false, null, mask);
            yield return new Case(b, t, c, nh, true, lengths, mask);
            yield return new Case(b, t, c, nh, false, null, null);
        }
    }

    private static (double Atol, double Rtol) Tolerance(DeviceKind kind) =>
        kind == DeviceKind.Cpu ? (1e-5, 1e-4) : (1e-4, 2e-3); // GPU exp is approximate

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void ForwardMatchesReference(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 0;
        foreach (var cs in Cases(ForwardShapes))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var (output, lse) = RunForward(backend, cs, qkv, path);
            var (expectedOutput, expectedLse, _) = Ref.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            TensorAssert.Close(expectedOutput, output, atol, rtol, $"output {cs}");
            AssertLse(expectedLse, lse, atol, rtol, $"lse {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void ForwardStaysFiniteWithLargeScores(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 8, 2), (1, 40, 12, 3)]))
        {
            var qkv = LargeScoreInput(cs, 5);
            var (output, lse) = RunForward(backend, cs, qkv, path);
            var (expectedOutput, expectedLse, probs) = Ref.Forward(TestData.ToDouble(qkv), cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            Assert.True(probs.Max() > 0.99 && expectedLse.Where(double.IsFinite).Max(Math.Abs) > 300, "the input should give near one-hot rows from scores ~1e3");
            // A float score of ~1e3 carries an absolute error ~1e-4, which exp turns into a relative error of that size.
            TensorAssert.Close(expectedOutput, output, 2e-3, 2e-3, $"output {cs}");
            AssertLse(expectedLse, lse, 2e-3, 1e-5, $"lse {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void AllEqualLargeScoresAverageTheVisibleValues(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 6, 2), (1, 35, 4, 1)]))
        {
            var qkv = TestData.Normal(11, cs.QkvLength);
            for (var bt = 0; bt < cs.B * cs.T; bt++)
                for (var i = 0; i < 2 * cs.C; i++)
                    qkv[bt * 3 * cs.C + i] = 1000f; // every q.k/sqrt(hs) = 1e6*sqrt(hs)
            var (output, _) = RunForward(backend, cs, qkv, path);
            var hs = cs.C / cs.NH;
            var expected = new double[cs.OutputLength];
            for (var b = 0; b < cs.B; b++)
                for (var t = 0; t < cs.T; t++)
                    for (var ch = 0; ch < cs.C; ch++)
                    {
                        var (sum, n) = (0.0, 0);
                        for (var j = 0; j < cs.T; j++)
                            if (Ref.Visible(cs.KeyLengths, cs.KeyMask, cs.Causal, cs.T, b, t, j))
                            {
                                sum += qkv[(b * cs.T + j) * 3 * cs.C + 2 * cs.C + ch];
                                n++;
                            }
                        expected[(b * cs.T + t) * cs.C + ch] = n == 0 ? 0 : sum / n;
                    }
            Assert.True(hs > 0);
            TensorAssert.Close(expected, output, 1e-5, 1e-5, $"output {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void QueriesWithNoVisibleKeyGiveZerosAndNoGradient(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        foreach (var causal in new[] { false, true })
        {
            // Sequence 0 has key length 0; sequence 1's length exceeds T (no padding) but its mask hides keys 0 and 1,
            // so with causal masking its queries 0 and 1 see nothing; sequence 2's mask hides every key.
            const int b = 3, t = 5;
            var mask = new int[b * t];
            for (var j = 0; j < t; j++)
                mask[t + j] = j < 2 ? 0 : 1;
            for (var j = 0; j < t; j++)
                mask[j] = 1;
            var cs = new Case(b, t, 6, 2, causal, [0, 9, 5], mask);
            var qkv = TestData.Normal(21, cs.QkvLength);
            var dout = TestData.Normal(22, cs.OutputLength);
            var (output, lse) = RunForward(backend, cs, qkv, path);
            var dQkv = RunBackward(backend, cs, qkv, output, lse, dout, path);
            var x = TestData.ToDouble(qkv);
            var (expectedOutput, expectedLse, _) = Ref.Forward(x, cs.KeyLengths, cs.KeyMask, b, t, cs.C, cs.NH, causal);
            var expectedDQkv = Ref.Backward(TestData.ToDouble(dout), x, cs.KeyLengths, cs.KeyMask, b, t, cs.C, cs.NH, causal);
            Assert.True(expectedOutput.Take(t * cs.C).All(v => v == 0) && expectedOutput.Skip(2 * t * cs.C).All(v => v == 0));
            TensorAssert.Close(expectedOutput, output, atol, rtol, $"output {cs}");
            AssertLse(expectedLse, lse, atol, rtol, $"lse {cs}");
            TensorAssert.Close(expectedDQkv, dQkv, atol, rtol, $"dQkv {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void BackwardMatchesFiniteDifferencesAndReference(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var seed = 100;
        foreach (var cs in Cases(BackwardShapes))
        {
            var qkv = TestData.Normal(++seed, cs.QkvLength);
            var dout = TestData.Normal(++seed, cs.OutputLength);
            var (output, lse) = RunForward(backend, cs, qkv, path);
            var dQkv = RunBackward(backend, cs, qkv, output, lse, dout, path);

            var x = TestData.ToDouble(qkv);
            var dy = TestData.ToDouble(dout);
            var numeric = FiniteDifference.Gradient(
                v => FiniteDifference.Dot(Ref.Forward(v, cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal).Output, dy), x);
            var analytic = Ref.Backward(dy, x, cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);

            TensorAssert.Close(numeric, analytic, 1e-7, 1e-6, $"reference backward vs finite differences {cs}");
            TensorAssert.Close(numeric, dQkv, atol, rtol, $"dQkv vs finite differences {cs}");
            TensorAssert.Close(analytic, dQkv, atol, rtol, $"dQkv vs reference backward {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void BackwardWithLargeScoresMatchesReference(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        foreach (var cs in Cases([(2, 7, 8, 2), (1, 34, 6, 1)]))
        {
            var qkv = LargeScoreInput(cs, 7);
            var dout = TestData.Normal(8, cs.OutputLength);
            var (output, lse) = RunForward(backend, cs, qkv, path);
            var dQkv = RunBackward(backend, cs, qkv, output, lse, dout, path);
            var expected = Ref.Backward(TestData.ToDouble(dout), TestData.ToDouble(qkv), cs.KeyLengths, cs.KeyMask, cs.B, cs.T, cs.C, cs.NH, cs.Causal);
            // Near one-hot rows: probability errors of ~1e-4 are multiplied by |q|, |k| ~ 30.
            var scale = expected.Max(Math.Abs);
            TensorAssert.Close(expected, dQkv, 5e-3 * scale, 5e-3, $"dQkv {cs}");
        }
    }

    [Theory]
    [MemberData(nameof(DevicesAndPaths))]
    public void ResultsAreBitwiseReproducible(DeviceKind kind, AttentionPath path)
    {
        var backend = fixture.Get(kind);
        var cs = new Case(2, 40, 8, 2, true, [13, 40], Enumerable.Range(0, 80).Select(i => i % 5 == 1 ? 0 : 1).ToArray());
        var qkv = TestData.Normal(31, cs.QkvLength);
        var dout = TestData.Normal(32, cs.OutputLength);
        var (output1, lse1) = RunForward(backend, cs, qkv, path);
        var dQkv1 = RunBackward(backend, cs, qkv, output1, lse1, dout, path);
        var (output2, lse2) = RunForward(backend, cs, qkv, path);
        var dQkv2 = RunBackward(backend, cs, qkv, output2, lse2, dout, path);
        TensorAssert.Equal(output1, output2, "output");
        TensorAssert.Equal(lse1, lse2, "lse");
        TensorAssert.Equal(dQkv1, dQkv2, "dQkv");
    }

    [Theory]
    [MemberData(nameof(TestSupport.Devices.All), MemberType = typeof(TestSupport.Devices))]
    public void RowAndTiledPathsAgree(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var (atol, rtol) = Tolerance(kind);
        var cs = new Case(2, 70, 10, 2, true, [50, 70], Enumerable.Range(0, 140).Select(i => i % 7 == 3 ? 0 : 1).ToArray());
        var qkv = TestData.Normal(51, cs.QkvLength);
        var dout = TestData.Normal(52, cs.OutputLength);
        var (rowsOutput, rowsLse) = RunForward(backend, cs, qkv, AttentionPath.Rows);
        var (tiledOutput, tiledLse) = RunForward(backend, cs, qkv, AttentionPath.Tiled);
        var rowsD = RunBackward(backend, cs, qkv, rowsOutput, rowsLse, dout, AttentionPath.Rows);
        var tiledD = RunBackward(backend, cs, qkv, tiledOutput, tiledLse, dout, AttentionPath.Tiled);
        TensorAssert.Close(TestData.ToDouble(rowsOutput), tiledOutput, atol, rtol, "output");
        TensorAssert.Close(TestData.ToDouble(rowsLse), tiledLse, atol, rtol, "lse");
        TensorAssert.Close(TestData.ToDouble(rowsD), tiledD, atol, rtol, "dQkv");
    }

    [Theory]
    [MemberData(nameof(TestSupport.Devices.All), MemberType = typeof(TestSupport.Devices))]
    public void KernelsGiveTheSameResultsForAnyLaunch(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var a = backend.Accelerator;
        var forwardRows = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionForwardRowsKernel);
        var forwardTiled = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>(
            AttentionKernels.AttentionForwardTiledKernel);
        var delta = a.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDims>(AttentionKernels.AttentionBackwardDeltaKernel);
        var queryRows = LoadBackward(a, AttentionKernels.AttentionBackwardQueryRowsKernel);
        var keyRows = LoadBackward(a, AttentionKernels.AttentionBackwardKeyRowsKernel);
        var queryTiled = LoadBackward(a, AttentionKernels.AttentionBackwardQueryTiledKernel);
        var keyTiled = LoadBackward(a, AttentionKernels.AttentionBackwardKeyTiledKernel);
        var cs = new Case(2, 37, 6, 2, true, [20, 37], Enumerable.Range(0, 74).Select(i => i % 4 == 0 ? 0 : 1).ToArray());
        var d = new AttentionDims(cs.B, cs.T, cs.C, cs.NH, cs.Causal);
        var qkv = TestData.Normal(41, cs.QkvLength);
        var dout = TestData.Normal(42, cs.OutputLength);
        var (expectedOutput, expectedLse) = RunForward(backend, cs, qkv, AttentionPath.Rows);
        var expectedDQkv = RunBackward(backend, cs, qkv, expectedOutput, expectedLse, dout, AttentionPath.Rows);
        var expectedTiled = RunBackward(backend, cs, qkv, expectedOutput, expectedLse, dout, AttentionPath.Tiled);

        using var input = backend.Upload(qkv);
        using var dOutput = backend.Upload(dout);
        using var lengths = backend.Upload(cs.KeyLengths!);
        using var mask = backend.Upload(cs.KeyMask!);
        var s = backend.ComputeStream;
        // Row kernels: one thread in all, groups smaller than a warp, more threads than work.
        // Tiled kernels: groups are always one tile; one group for all tiles, or several.
        foreach (var (config, tiled) in new[] { (new KernelConfig(1, 1), false), (new KernelConfig(3, 7), false), (new KernelConfig(5, 32), false),
                     (new KernelConfig(1, AttentionKernels.Tile), true), (new KernelConfig(3, AttentionKernels.Tile), true) })
        {
            using var output = backend.Upload(Filled(cs.OutputLength, float.NaN));
            using var lse = backend.Upload(Filled(cs.LseLength, float.NaN));
            using var deltas = backend.Upload(Filled(cs.LseLength, float.NaN));
            using var dQkv = backend.Upload(Filled(cs.QkvLength, float.NaN));
            (tiled ? forwardTiled : forwardRows)(s, config, output.View, lse.View, input.View, lengths.View, mask.View, d);
            delta(s, config, deltas.View, dOutput.View, output.View, d);
            (tiled ? queryTiled : queryRows)(s, config, dQkv.View, dOutput.View, input.View, lse.View, deltas.View, lengths.View, mask.View, d);
            (tiled ? keyTiled : keyRows)(s, config, dQkv.View, dOutput.View, input.View, lse.View, deltas.View, lengths.View, mask.View, d);
            TensorAssert.Equal(expectedOutput, backend.Download(output), $"output {config}");
            TensorAssert.Equal(expectedLse, backend.Download(lse), $"lse {config}");
            TensorAssert.Equal(tiled ? expectedTiled : expectedDQkv, backend.Download(dQkv), $"dQkv {config}");
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
        using var lse = backend.Zeros<float>(AttentionOps.LseLength(b, t, nh));
        using var dQkv = backend.Zeros<float>(b * t * 3 * c);
        using var scratch = backend.Zeros<float>(AttentionOps.BackwardScratchLength(b, t, c, nh));
        using var lengths = backend.Zeros<int>(b + 1);
        var none = ArrayView<int>.Empty;

        var e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, lse.View, qkv.View.SubView(1), none, none, b, t, c, nh, true));
        Assert.Contains("qkv", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, lse.View.SubView(1), qkv.View, none, none, b, t, c, nh, true));
        Assert.Contains("lse", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, lse.View, qkv.View, lengths.View, none, b, t, c, nh, false));
        Assert.Contains("keyLengths", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, lse.View, qkv.View, none, lengths.View, b, t, c, nh, false));
        Assert.Contains("keyMask", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(s, output.View, lse.View, qkv.View, none, none, b, t, c, 4, true));
        Assert.Contains("multiple", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Forward(s, output.View, lse.View, qkv.View, none, none, b, 0, c, nh, true));
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, dQkv.View, output.View, qkv.View, output.View, lse.View, scratch.View.SubView(1), none, none, b, t, c, nh, true));
        Assert.Contains("scratch", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, dQkv.View.SubView(1), output.View, qkv.View, output.View, lse.View, scratch.View, none, none, b, t, c, nh, true));
        Assert.Contains("dQkv", e.Message);
        Assert.Equal(AttentionPath.Rows, ops.Resolve(AttentionPath.Auto, 64)); // the CPU accelerator's path
        e = Assert.Throws<ArgumentException>(() => ops.Resolve(AttentionPath.Tiled, AttentionKernels.MaxTiledHeadSize + 1));
        Assert.Contains("row path", e.Message);
    }

    private static Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims>
        LoadBackward(Accelerator a, Action<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, AttentionDims> kernel) =>
        a.LoadKernel(kernel);

    /// <summary>Finite entries close to the reference; rows with no visible key exactly negative infinity.</summary>
    private static void AssertLse(double[] expected, float[] actual, double atol, double rtol, string what)
    {
        for (var i = 0; i < expected.Length; i++)
            if (double.IsNegativeInfinity(expected[i]))
                Assert.True(float.IsNegativeInfinity(actual[i]), $"{what}: row {i} sees no key but has lse {actual[i]}");
        var finite = expected.Select(v => double.IsFinite(v) ? v : 0).ToArray();
        var got = actual.Select(v => float.IsNegativeInfinity(v) ? 0f : v).ToArray();
        TensorAssert.Close(finite, got, atol, rtol, what);
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

    private static float[] Filled(int n, float value) => Enumerable.Repeat(value, n).ToArray();

    private static DeviceBuffer<int>? UploadOrNull(Backend backend, int[]? data) => data is null ? null : backend.Upload(data);

    /// <summary>Runs the forward pass with NaN-filled outputs, so any element left unwritten fails the comparison.</summary>
    private static (float[] Output, float[] Lse) RunForward(Backend backend, Case cs, float[] qkv, AttentionPath path)
    {
        var ops = backend.Get<AttentionOps>();
        using var input = backend.Upload(qkv);
        using var output = backend.Upload(Filled(cs.OutputLength, float.NaN));
        using var lse = backend.Upload(Filled(cs.LseLength, float.NaN));
        using var lengths = UploadOrNull(backend, cs.KeyLengths);
        using var mask = UploadOrNull(backend, cs.KeyMask);
        ops.Forward(backend.ComputeStream, output.View, lse.View, input.View, lengths?.View ?? ArrayView<int>.Empty,
            mask?.View ?? ArrayView<int>.Empty, cs.B, cs.T, cs.C, cs.NH, cs.Causal, path);
        return (backend.Download(output), backend.Download(lse));
    }

    /// <summary>Runs the backward pass with NaN-filled dQkv and scratch: dQkv must be assigned, not accumulated.</summary>
    private static float[] RunBackward(Backend backend, Case cs, float[] qkv, float[] output, float[] lse, float[] dout, AttentionPath path)
    {
        var ops = backend.Get<AttentionOps>();
        using var input = backend.Upload(qkv);
        using var savedOutput = backend.Upload(output);
        using var savedLse = backend.Upload(lse);
        using var dOutput = backend.Upload(dout);
        using var dQkv = backend.Upload(Filled(cs.QkvLength, float.NaN));
        using var scratch = backend.Upload(Filled((int)AttentionOps.BackwardScratchLength(cs.B, cs.T, cs.C, cs.NH), float.NaN));
        using var lengths = UploadOrNull(backend, cs.KeyLengths);
        using var mask = UploadOrNull(backend, cs.KeyMask);
        ops.Backward(backend.ComputeStream, dQkv.View, dOutput.View, input.View, savedOutput.View, savedLse.View, scratch.View,
            lengths?.View ?? ArrayView<int>.Empty, mask?.View ?? ArrayView<int>.Empty, cs.B, cs.T, cs.C, cs.NH, cs.Causal, path);
        return backend.Download(dQkv);
    }
}
