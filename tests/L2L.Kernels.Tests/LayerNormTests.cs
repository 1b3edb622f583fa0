// Layer normalisation forward and backward against the double reference and finite differences.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class LayerNormTests(BackendFixture fixture)
{
    private const float Eps = 1e-5f;

    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    // (N, C): odd sizes, C = 1 (zero variance), and C values that make the CPU launcher pick groups of 16, 32, 48 and 64.
    private static readonly (int N, int C)[] Shapes = [(1, 1), (3, 7), (7, 22), (22, 3), (5, 127), (4, 50), (3, 40), (2, 300)];

    private static double Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-4;

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, c) in Shapes)
        {
            var input = TestData.Normal(n * 31 + c, n * c, 2.0, 0.5);
            var weight = TestData.Normal(c + 1, c, 1.0, 1.0);
            var bias = TestData.Normal(c + 2, c);
            CheckForward(backend, input, weight, bias, n, c, 2e-5, Rtol(kind), $"n={n} c={c}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardHandlesExtremeRows(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int n = 4;
        const int c = 127;
        var input = new float[n * c];
        var noise = TestData.Normal(5, n * c);
        for (var j = 0; j < c; j++)
        {
            input[j] = 3.25f;                            // all equal: zero variance
            input[c + j] = noise[c + j] * 1e6f;          // large magnitude
            input[2 * c + j] = 1000f + noise[2 * c + j]; // large common offset
            input[3 * c + j] = noise[3 * c + j] * 1e-3f; // variance far below eps
        }
        var weight = TestData.Normal(6, c, 1.0, 1.0);
        var bias = TestData.Normal(7, c);
        // The offset row loses a few bits in float before any kernel sees it; atol covers that.
        CheckForward(backend, input, weight, bias, n, c, 2e-3, 1e-4, "extreme rows");
    }

    [Fact]
    public void ReferenceBackwardMatchesFiniteDifferences()
    {
        foreach (var (n, c) in new[] { (1, 1), (3, 7), (2, 22) })
        {
            var input = TestData.ToDouble(TestData.Normal(n + c, n * c, 1.5, 0.3));
            var weight = TestData.ToDouble(TestData.Normal(n + c + 1, c, 1.0, 1.0));
            var bias = TestData.ToDouble(TestData.Normal(n + c + 2, c));
            var dout = TestData.ToDouble(TestData.Normal(n + c + 3, n * c));
            var (dInput, dWeight, dBias) = LayerNormReference.Backward(dout, input, weight, n, c, Eps);
            var fdInput = FiniteDifference.Gradient(x => FiniteDifference.Dot(LayerNormReference.Forward(x, weight, bias, n, c, Eps), dout), input);
            var fdWeight = FiniteDifference.Gradient(w => FiniteDifference.Dot(LayerNormReference.Forward(input, w, bias, n, c, Eps), dout), weight);
            var fdBias = FiniteDifference.Gradient(b => FiniteDifference.Dot(LayerNormReference.Forward(input, weight, b, n, c, Eps), dout), bias);
            TensorAssert.Close(fdInput, dInput, 1e-6, 1e-5, $"dInput n={n} c={c}");
            TensorAssert.Close(fdWeight, dWeight, 1e-6, 1e-5, $"dWeight n={n} c={c}");
            TensorAssert.Close(fdBias, dBias, 1e-6, 1e-5, $"dBias n={n} c={c}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesFiniteDifferences(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, c) in new[] { (1, 1), (3, 7), (2, 22), (2, 50) })
        {
            var input = TestData.Normal(n * 7 + c, n * c, 1.5, 0.3);
            var weight = TestData.Normal(n * 7 + c + 1, c, 1.0, 1.0);
            var bias = TestData.Normal(n * 7 + c + 2, c);
            var dout = TestData.Normal(n * 7 + c + 3, n * c);
            var (dInput, dWeight, dBias) = RunBackward(backend, input, weight, bias, dout, n, c,
                new float[n * c], new float[c], new float[c], accumulate: false);

            var x = TestData.ToDouble(input);
            var w = TestData.ToDouble(weight);
            var b = TestData.ToDouble(bias);
            var g = TestData.ToDouble(dout);
            var fdInput = FiniteDifference.Gradient(v => FiniteDifference.Dot(LayerNormReference.Forward(v, w, b, n, c, Eps), g), x);
            var fdWeight = FiniteDifference.Gradient(v => FiniteDifference.Dot(LayerNormReference.Forward(x, v, b, n, c, Eps), g), w);
            var fdBias = FiniteDifference.Gradient(v => FiniteDifference.Dot(LayerNormReference.Forward(x, w, v, n, c, Eps), g), b);
            TensorAssert.Close(fdInput, dInput, 1e-4, 1e-3, $"dInput n={n} c={c}");
            TensorAssert.Close(fdWeight, dWeight, 1e-4, 1e-3, $"dWeight n={n} c={c}");
            TensorAssert.Close(fdBias, dBias, 1e-4, 1e-3, $"dBias n={n} c={c}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesReferenceAndAccumulates(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, c) in Shapes)
        {
            var seed = n * 131 + c;
            var input = TestData.Normal(seed, n * c, 2.0, -0.5);
            var weight = TestData.Normal(seed + 1, c, 1.0, 1.0);
            var bias = TestData.Normal(seed + 2, c);
            var dout = TestData.Normal(seed + 3, n * c);
            var dInput0 = TestData.Normal(seed + 4, n * c);
            var dWeight0 = TestData.Normal(seed + 5, c);
            var dBias0 = TestData.Normal(seed + 6, c);
            var (refInput, refWeight, refBias) = LayerNormReference.Backward(TestData.ToDouble(dout), TestData.ToDouble(input),
                TestData.ToDouble(weight), n, c, Eps);

            foreach (var accumulate in new[] { false, true })
            {
                var (dInput, dWeight, dBias) = RunBackward(backend, input, weight, bias, dout, n, c, dInput0, dWeight0, dBias0, accumulate);
                var what = $"n={n} c={c} accumulateInput={accumulate}";
                TensorAssert.Close(Plus(accumulate ? dInput0 : null, refInput), dInput, 1e-4, Rtol(kind) * 10, "dInput " + what);
                // Parameter gradients always add to what was there.
                TensorAssert.Close(Plus(dWeight0, refWeight), dWeight, 1e-4, Rtol(kind) * 10, "dWeight " + what);
                TensorAssert.Close(Plus(dBias0, refBias), dBias, 1e-4, Rtol(kind) * 10, "dBias " + what);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardInPlaceOverDOutput(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<LayerNormOps>();
        const int n = 7;
        const int c = 22;
        var input = TestData.Normal(1, n * c);
        var weight = TestData.Normal(2, c, 1.0, 1.0);
        var bias = TestData.Normal(3, c);
        var dout = TestData.Normal(4, n * c);
        using var dx = backend.Upload(input);
        using var dw = backend.Upload(weight);
        using var db = backend.Upload(bias);
        using var y = backend.Zeros<float>(n * c);
        using var mean = backend.Zeros<float>(n);
        using var rstd = backend.Zeros<float>(n);
        using var grad = backend.Upload(dout);
        using var dWeight = backend.Zeros<float>(c);
        using var dBias = backend.Zeros<float>(c);
        var s = backend.ComputeStream;
        ops.Forward(s, y.View, mean.View, rstd.View, dx.View, dw.View, db.View, n, c, Eps);
        ops.Backward(s, grad.View, dWeight.View, dBias.View, grad.View, dx.View, dw.View, mean.View, rstd.View, n, c, false);
        var (refInput, refWeight, refBias) = LayerNormReference.Backward(TestData.ToDouble(dout), TestData.ToDouble(input),
            TestData.ToDouble(weight), n, c, Eps);
        TensorAssert.Close(refInput, backend.Download(grad), 1e-4, 1e-4, "dInput aliasing dOutput");
        TensorAssert.Close(refWeight, backend.Download(dWeight), 1e-4, 1e-4, "dWeight");
        TensorAssert.Close(refBias, backend.Download(dBias), 1e-4, 1e-4, "dBias");
    }

    [Fact]
    public void MismatchedShapesAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<LayerNormOps>();
        using var x = backend.Zeros<float>(12);
        using var stats = backend.Zeros<float>(3);
        using var w = backend.Zeros<float>(4);
        using var wrong = backend.Zeros<float>(5);
        var s = backend.ComputeStream;
        var e = Assert.Throws<ArgumentException>(() => ops.Forward(s, x.View, stats.View, stats.View, x.View, wrong.View, w.View, 3, 4, Eps));
        Assert.Contains("weight", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Backward(s, x.View, w.View, w.View, x.View, x.View, w.View, wrong.View, stats.View, 3, 4, false));
        Assert.Contains("mean", e.Message);
    }

    private static void CheckForward(Backend backend, float[] input, float[] weight, float[] bias, int n, int c,
        double atol, double rtol, string what)
    {
        var ops = backend.Get<LayerNormOps>();
        using var dx = backend.Upload(input);
        using var dw = backend.Upload(weight);
        using var db = backend.Upload(bias);
        using var y = backend.Upload(TestData.Normal(99, n * c)); // garbage the forward must overwrite
        using var mean = backend.Zeros<float>(n);
        using var rstd = backend.Zeros<float>(n);
        ops.Forward(backend.ComputeStream, y.View, mean.View, rstd.View, dx.View, dw.View, db.View, n, c, Eps);
        var expected = LayerNormReference.Forward(TestData.ToDouble(input), TestData.ToDouble(weight), TestData.ToDouble(bias),
            n, c, Eps, out var refMean, out var refRstd);
        TensorAssert.Close(expected, backend.Download(y), atol, rtol, "output " + what);
        TensorAssert.Close(refMean, backend.Download(mean), 1e-5, 1e-5, "mean " + what);
        TensorAssert.Close(refRstd, backend.Download(rstd), 1e-5, rtol * 10, "rstd " + what);
    }

    private static (float[] dInput, float[] dWeight, float[] dBias) RunBackward(Backend backend, float[] input, float[] weight,
        float[] bias, float[] dout, int n, int c, float[] dInput0, float[] dWeight0, float[] dBias0, bool accumulate)
    {
        var ops = backend.Get<LayerNormOps>();
        using var dx = backend.Upload(input);
        using var dw = backend.Upload(weight);
        using var db = backend.Upload(bias);
        using var y = backend.Zeros<float>(n * c);
        using var mean = backend.Zeros<float>(n);
        using var rstd = backend.Zeros<float>(n);
        using var grad = backend.Upload(dout);
        using var dInput = backend.Upload(dInput0);
        using var dWeight = backend.Upload(dWeight0);
        using var dBias = backend.Upload(dBias0);
        var s = backend.ComputeStream;
        ops.Forward(s, y.View, mean.View, rstd.View, dx.View, dw.View, db.View, n, c, Eps);
        ops.Backward(s, dInput.View, dWeight.View, dBias.View, grad.View, dx.View, dw.View, mean.View, rstd.View, n, c, accumulate);
        return (backend.Download(dInput), backend.Download(dWeight), backend.Download(dBias));
    }

    private static double[] Plus(float[]? start, double[] delta)
    {
        var r = new double[delta.Length];
        for (var i = 0; i < r.Length; i++) r[i] = (start is null ? 0.0 : start[i]) + delta[i];
        return r;
    }
}
