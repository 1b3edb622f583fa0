// The scale arguments a unit-scaled model passes (bias, LayerNorm and embedding gradients) and the weighted residual
// add, against double references on odd shapes.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class UnitScalingKernelTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static double[] Accumulated(float[] start, double[] delta, double scale) =>
        start.Select((v, i) => v + scale * delta[i]).ToArray();

    [Theory]
    [MemberData(nameof(Devices))]
    public void ScaledAddMatchesReferenceAndAliases(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<ResidualOps>();
        var s = backend.ComputeStream;
        foreach (var n in new[] { 1, 3, 7, 22, 127, 1001 })
        {
            var a = TestData.Normal(n, n);
            var b = TestData.Normal(n + 1, n, 1e3);
            const float wa = 0.7071f, wb = -0.125f;
            using var da = backend.Upload(a);
            using var db = backend.Upload(b);
            using var output = backend.Zeros<float>(n);
            ops.ScaledAdd(s, output.View, da.View, wa, db.View, wb);
            var expected = a.Select((x, i) => (double)wa * x + (double)wb * b[i]).ToArray();
            TensorAssert.Close(expected, backend.Download(output), 1e-6, 1e-6, $"n={n}");
            // In place over b (the branch, as a block's forward does) and a pure scale (wb = 0, b = a).
            ops.ScaledAdd(s, db.View, da.View, wa, db.View, wb);
            TensorAssert.Close(expected, backend.Download(db), 1e-6, 1e-6, $"in place n={n}");
            ops.ScaledAdd(s, da.View, da.View, 3f, da.View, 0f);
            TensorAssert.Close(a.Select(x => 3.0 * x).ToArray(), backend.Download(da), 0, 1e-7, $"scale n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BiasBackwardScalesTheColumnSums(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var gemm = backend.Get<GemmOps>();
        foreach (var (rows, n) in new[] { (1, 1), (3, 7), (22, 3), (127, 22), (7, 127) })
        {
            var dout = TestData.Normal(rows + n, rows * n);
            var start = TestData.Normal(rows * n, n);
            using var dOut = backend.Upload(dout);
            using var dBias = backend.Upload(start);
            const float scale = 0.0883883f; // 1/sqrt(128)
            gemm.BiasBackward(backend.ComputeStream, dBias.View, dOut.View, rows, n, scale);
            var sums = GemmReference.BiasBackward(TestData.ToDouble(dout), rows, n);
            TensorAssert.Close(Accumulated(start, sums, scale), backend.Download(dBias), 1e-5, 1e-5, $"rows={rows} n={n}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void LayerNormParameterGradientsAreScaledAndTheInputGradientIsNot(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<LayerNormOps>();
        const double eps = 1e-5;
        var s = backend.ComputeStream;
        foreach (var (n, c) in new[] { (1, 3), (7, 22), (22, 7), (3, 127) })
        {
            var input = TestData.Normal(n, n * c);
            var weight = TestData.Normal(c, c, 0.3, 1.0);
            var dout = TestData.Normal(n + c, n * c);
            var w0 = TestData.Normal(1, c);
            var b0 = TestData.Normal(2, c);
            using var x = backend.Upload(input);
            using var w = backend.Upload(weight);
            using var bias = backend.Zeros<float>(c);
            using var y = backend.Zeros<float>(n * c);
            using var mean = backend.Zeros<float>(n);
            using var rstd = backend.Zeros<float>(n);
            using var dOut = backend.Upload(dout);
            using var dIn = backend.Zeros<float>(n * c);
            using var dW = backend.Upload(w0);
            using var dB = backend.Upload(b0);
            ops.Forward(s, y.View, mean.View, rstd.View, x.View, w.View, bias.View, n, c, (float)eps);
            const float scale = 0.25f;
            ops.Backward(s, dIn.View, dW.View, dB.View, dOut.View, x.View, w.View, mean.View, rstd.View, n, c, accumulateInput: false, paramGradScale: scale);
            var (refIn, refW, refB) = LayerNormReference.Backward(TestData.ToDouble(dout), TestData.ToDouble(input), TestData.ToDouble(weight), n, c, eps);
            var what = $"n={n} c={c}";
            TensorAssert.Close(refIn, backend.Download(dIn), 1e-4, 1e-4, "dInput " + what);
            TensorAssert.Close(Accumulated(w0, refW, scale), backend.Download(dW), 1e-4, 1e-4, "dWeight " + what);
            TensorAssert.Close(Accumulated(b0, refB, scale), backend.Download(dB), 1e-4, 1e-4, "dBias " + what);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void EmbeddingGradientsAreScaledPerTable(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        const int vocab = 11;
        foreach (var (b, t, c) in new[] { (1, 1, 3), (3, 7, 22), (2, 22, 7) })
        {
            var maxT = t + 2;
            var rng = new Random(b * t * c);
            var tokens = Enumerable.Range(0, b * t).Select(_ => rng.Next(vocab)).ToArray();
            var dout = TestData.Normal(c, b * t * c);
            var wte0 = TestData.Normal(c + 1, vocab * c);
            var wpe0 = TestData.Normal(c + 2, maxT * c);
            var planHost = new int[EmbeddingScatterPlan.Length(tokens.Length)];
            var segments = EmbeddingScatterPlan.Build(tokens, planHost);
            using var plan = backend.Upload(planHost);
            using var dOut = backend.Upload(dout);
            using var dWte = backend.Upload(wte0);
            using var dWpe = backend.Upload(wpe0);
            const float tokenScale = 0.7f, positionScale = -1.5f;
            ops.Backward(backend.ComputeStream, dWte.View, dWpe.View, dOut.View, plan.View, segments, b, t, c, tokenScale, positionScale);
            var (refWte, refWpe) = EmbeddingReference.Backward(TestData.ToDouble(dout), tokens, b, t, c, vocab, maxT);
            var what = $"b={b} t={t} c={c}";
            TensorAssert.Close(Accumulated(wte0, refWte, tokenScale), backend.Download(dWte), 1e-5, 1e-5, "dWte " + what);
            TensorAssert.Close(Accumulated(wpe0, refWpe, positionScale), backend.Download(dWpe), 1e-5, 1e-5, "dWpe " + what);
        }
    }
}
