// Fused softmax + cross-entropy against the double reference and finite differences of the mean loss.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class CrossEntropyTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    // (N, V): V = 1, odd sizes, and V values that make the CPU launcher pick groups of 16, 48 and 64.
    private static readonly (int N, int V)[] Shapes = [(1, 1), (3, 7), (7, 22), (22, 3), (5, 127), (3, 50), (2, 1001)];

    private static double Rtol(DeviceKind kind) => kind == DeviceKind.Cpu ? 1e-5 : 1e-3;

    private static int[] Targets(int seed, int n, int v)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(0, v)).ToArray();
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardBackwardMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, v) in Shapes)
        {
            var logits = TestData.Normal(n * 17 + v, n * v, 3.0);
            var targets = Targets(n + v, n, v);
            var scale = 1f / n;
            var (losses, dLogits) = Run(backend, logits, targets, n, v, scale, -1, inPlace: false);
            var x = TestData.ToDouble(logits);
            var what = $"n={n} v={v}";
            TensorAssert.Close(CrossEntropyReference.Losses(x, targets, n, v), losses, 1e-5, Rtol(kind), "losses " + what);
            TensorAssert.Close(CrossEntropyReference.DLogits(x, targets, n, v, scale), dLogits, 1e-6, Rtol(kind), "dLogits " + what);
            Assert.Equal(losses, RunForward(backend, logits, targets, n, v, -1));
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void GradientMatchesFiniteDifferencesOfMeanLoss(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, v) in new[] { (1, 1), (3, 7), (4, 22) })
        {
            var logits = TestData.Normal(n + v, n * v, 2.0);
            var targets = Targets(n * v, n, v);
            targets[0] = -1; // ignored rows leave the mean's denominator and get no gradient
            var counted = targets.Count(t => t != -1);
            var scale = counted == 0 ? 0f : 1f / counted;
            var (_, dLogits) = Run(backend, logits, targets, n, v, scale, -1, inPlace: false);
            var x = TestData.ToDouble(logits);
            var fd = FiniteDifference.Gradient(
                l => counted == 0 ? 0.0 : CrossEntropyReference.Losses(l, targets, n, v).Sum() / counted, x);
            TensorAssert.Close(fd, CrossEntropyReference.DLogits(x, targets, n, v, scale), 1e-8, 1e-6, $"reference vs FD n={n} v={v}");
            TensorAssert.Close(fd, dLogits, 1e-6, Rtol(kind) * 10, $"device vs FD n={n} v={v}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void IgnoredRowsGiveZeroLossAndGradient(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int n = 7, v = 22, ignore = -100;
        var logits = TestData.Normal(4, n * v);
        var targets = Targets(5, n, v);
        targets[1] = ignore;
        targets[4] = ignore;
        targets[6] = ignore;
        var (losses, dLogits) = Run(backend, logits, targets, n, v, 0.5f, ignore, inPlace: false);
        var x = TestData.ToDouble(logits);
        TensorAssert.Close(CrossEntropyReference.Losses(x, targets, n, v, ignore), losses, 1e-5, Rtol(kind), "losses");
        TensorAssert.Close(CrossEntropyReference.DLogits(x, targets, n, v, 0.5, ignore), dLogits, 1e-6, Rtol(kind), "dLogits");
        foreach (var r in new[] { 1, 4, 6 })
        {
            Assert.Equal(0f, losses[r]);
            Assert.All(dLogits.AsSpan(r * v, v).ToArray(), d => Assert.Equal(0f, d));
        }
        Assert.Equal(losses, RunForward(backend, logits, targets, n, v, ignore));
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void GradientMayOverwriteLogitsInPlace(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (n, v) in new[] { (3, 7), (5, 127), (2, 1001) })
        {
            var logits = TestData.Normal(n + 2 * v, n * v, 3.0);
            var targets = Targets(n, n, v);
            targets[n - 1] = -1;
            var (losses, dLogits) = Run(backend, logits, targets, n, v, 1f, -1, inPlace: true);
            var x = TestData.ToDouble(logits);
            TensorAssert.Close(CrossEntropyReference.Losses(x, targets, n, v), losses, 1e-5, Rtol(kind), $"losses n={n} v={v}");
            TensorAssert.Close(CrossEntropyReference.DLogits(x, targets, n, v, 1.0), dLogits, 1e-6, Rtol(kind), $"dLogits n={n} v={v}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ExtremeLogitsStayFinite(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int n = 5, v = 127;
        var logits = new float[n * v];
        var noise = TestData.Normal(8, n * v);
        for (var j = 0; j < v; j++)
        {
            logits[j] = 7.5f;                          // all equal: loss log V
            logits[v + j] = noise[v + j] * 1e4f;       // huge spread
            logits[2 * v + j] = 1e4f + noise[2 * v + j]; // huge common offset
            logits[3 * v + j] = -1e4f;                 // all hugely negative
            logits[4 * v + j] = j == 3 ? 1e4f : 0f;    // one dominant logit
        }
        var targets = new[] { 0, 11, 100, 5, 3 };
        var (losses, dLogits) = Run(backend, logits, targets, n, v, 1f, -1, inPlace: false);
        var x = TestData.ToDouble(logits);
        var refLosses = CrossEntropyReference.Losses(x, targets, n, v);
        TensorAssert.Close(refLosses, losses, 1e-4, Rtol(kind), "losses");
        TensorAssert.Close(CrossEntropyReference.DLogits(x, targets, n, v, 1.0), dLogits, 1e-6, Rtol(kind), "dLogits");
        Assert.Equal(Math.Log(v), losses[0], 5);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void OutOfRangeTargetGivesNaN(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        const int n = 2, v = 7;
        var logits = TestData.Normal(9, n * v);
        var (losses, dLogits) = Run(backend, logits, [v, 2], n, v, 1f, -1, inPlace: false);
        Assert.True(float.IsNaN(losses[0]));
        Assert.True(float.IsNaN(dLogits[0]));
        Assert.True(float.IsFinite(losses[1]));
    }

    [Fact]
    public void MismatchedShapesAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<CrossEntropyOps>();
        using var logits = backend.Zeros<float>(3 * 7);
        using var losses = backend.Zeros<float>(3);
        using var targets = backend.Zeros<int>(4);
        var e = Assert.Throws<ArgumentException>(() => ops.Forward(backend.ComputeStream, losses.View, logits.View, targets.View, 3, 7));
        Assert.Contains("targets", e.Message);
    }

    private static (float[] Losses, float[] DLogits) Run(Backend backend, float[] logits, int[] targets, int n, int v,
        float scale, int ignoreIndex, bool inPlace)
    {
        var ops = backend.Get<CrossEntropyOps>();
        using var dLogitsIn = backend.Upload(logits);
        using var dTargets = backend.Upload(targets);
        using var dLosses = backend.Upload(TestData.Normal(77, n)); // garbage the kernel must overwrite
        using var dGrad = backend.Upload(TestData.Normal(78, n * v));
        var grad = inPlace ? dLogitsIn : dGrad;
        ops.ForwardBackward(backend.ComputeStream, dLosses.View, grad.View, dLogitsIn.View, dTargets.View, n, v, scale, ignoreIndex);
        return (backend.Download(dLosses), backend.Download(grad));
    }

    private static float[] RunForward(Backend backend, float[] logits, int[] targets, int n, int v, int ignoreIndex)
    {
        var ops = backend.Get<CrossEntropyOps>();
        using var dLogits = backend.Upload(logits);
        using var dTargets = backend.Upload(targets);
        using var dLosses = backend.Upload(TestData.Normal(79, n));
        ops.Forward(backend.ComputeStream, dLosses.View, dLogits.View, dTargets.View, n, v, ignoreIndex);
        return backend.Download(dLosses);
    }
}
