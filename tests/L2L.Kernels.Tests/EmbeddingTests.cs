// Token + position embedding forward and backward against the double reference and finite differences.
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class EmbeddingTests(BackendFixture fixture)
{
    private const int Vocab = 11;

    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static readonly (int B, int T, int C)[] Shapes = [(1, 1, 1), (2, 3, 7), (3, 7, 22), (2, 5, 127), (1, 22, 3)];

    private static int[] Tokens(int seed, int count)
    {
        var rng = new Random(seed);
        var tokens = new int[count];
        // A small range so tokens repeat within a batch and collide in dWte.
        for (var i = 0; i < count; i++) tokens[i] = rng.Next(0, Math.Min(Vocab, 4));
        if (count > 1) tokens[count - 1] = Vocab - 1; // the last row of the table
        return tokens;
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void ForwardMatchesReference(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        foreach (var (b, t, c) in Shapes)
        {
            var maxT = t + 2;
            var tokens = Tokens(b * t + c, b * t);
            var wte = TestData.Normal(c, Vocab * c, 1e3);
            var wpe = TestData.Normal(c + 1, maxT * c);
            using var dTokens = backend.Upload(tokens);
            using var dWte = backend.Upload(wte);
            using var dWpe = backend.Upload(wpe);
            using var output = backend.Zeros<float>(b * t * c);
            ops.Forward(backend.ComputeStream, output.View, dTokens.View, dWte.View, dWpe.View, b, t, c);
            var expected = EmbeddingReference.Forward(tokens, TestData.ToDouble(wte), TestData.ToDouble(wpe), b, t, c);
            TensorAssert.Close(expected, backend.Download(output), 0, 1e-7, $"b={b} t={t} c={c}");
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesReferenceAndAccumulates(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        foreach (var (b, t, c) in Shapes)
        {
            var maxT = t + 2;
            var tokens = Tokens(b * t + c + 1, b * t);
            var dout = TestData.Normal(c + 2, b * t * c);
            var dWte0 = TestData.Normal(c + 3, Vocab * c);
            var dWpe0 = TestData.Normal(c + 4, maxT * c);
            var (planHost, segments) = Plan(tokens);
            using var plan = backend.Upload(planHost);
            using var dOut = backend.Upload(dout);
            using var dWte = backend.Upload(dWte0);
            using var dWpe = backend.Upload(dWpe0);
            ops.Backward(backend.ComputeStream, dWte.View, dWpe.View, dOut.View, plan.View, segments, b, t, c);
            var (refWte, refWpe) = EmbeddingReference.Backward(TestData.ToDouble(dout), tokens, b, t, c, Vocab, maxT);
            var what = $"b={b} t={t} c={c}";
            // Rows past T must be left alone; Plus covers that since the reference gradient is zero there.
            TensorAssert.Close(Plus(dWte0, refWte), backend.Download(dWte), 1e-5, 1e-5, "dWte " + what);
            TensorAssert.Close(Plus(dWpe0, refWpe), backend.Download(dWpe), 1e-5, 1e-5, "dWpe " + what);
        }
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardMatchesFiniteDifferences(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        const int b = 2, t = 3, c = 4, maxT = 5;
        var tokens = new[] { 1, 4, 1, 1, 0, 4 };
        var wte = TestData.Normal(1, Vocab * c);
        var wpe = TestData.Normal(2, maxT * c);
        var dout = TestData.Normal(3, b * t * c);
        var (planHost, segments) = Plan(tokens);
        Assert.Equal(3, segments); // tokens 0, 1 and 4
        using var plan = backend.Upload(planHost);
        using var dOut = backend.Upload(dout);
        using var dWte = backend.Zeros<float>(Vocab * c);
        using var dWpe = backend.Zeros<float>(maxT * c);
        ops.Backward(backend.ComputeStream, dWte.View, dWpe.View, dOut.View, plan.View, segments, b, t, c);
        var wteD = TestData.ToDouble(wte);
        var wpeD = TestData.ToDouble(wpe);
        var g = TestData.ToDouble(dout);
        var fdWte = FiniteDifference.Gradient(w => FiniteDifference.Dot(EmbeddingReference.Forward(tokens, w, wpeD, b, t, c), g), wteD);
        var fdWpe = FiniteDifference.Gradient(w => FiniteDifference.Dot(EmbeddingReference.Forward(tokens, wteD, w, b, t, c), g), wpeD);
        var (refWte, refWpe) = EmbeddingReference.Backward(g, tokens, b, t, c, Vocab, maxT);
        TensorAssert.Close(fdWte, refWte, 1e-8, 1e-6, "reference dWte vs FD");
        TensorAssert.Close(fdWpe, refWpe, 1e-8, 1e-6, "reference dWpe vs FD");
        TensorAssert.Close(fdWte, backend.Download(dWte), 1e-5, 1e-5, "dWte vs FD");
        TensorAssert.Close(fdWpe, backend.Download(dWpe), 1e-5, 1e-5, "dWpe vs FD");
    }

    [Fact]
    public void MismatchedShapesAreRejected()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<EmbeddingOps>();
        using var tokens = backend.Zeros<int>(6);
        using var output = backend.Zeros<float>(6 * 4);
        using var wte = backend.Zeros<float>(Vocab * 4);
        using var shortWpe = backend.Zeros<float>(2 * 4);
        var e = Assert.Throws<ArgumentException>(() => ops.Forward(backend.ComputeStream, output.View, tokens.View, wte.View, shortWpe.View, 2, 3, 4));
        Assert.Contains("wpe", e.Message);
        e = Assert.Throws<ArgumentException>(() => ops.Forward(backend.ComputeStream, output.View, tokens.View, wte.View, wte.View, 3, 3, 4));
        Assert.Contains("tokens", e.Message);
    }

    private static double[] Plus(float[] start, double[] delta)
    {
        var r = new double[delta.Length];
        for (var i = 0; i < r.Length; i++) r[i] = start[i] + delta[i];
        return r;
    }

    private static (int[] Plan, int Segments) Plan(int[] tokens)
    {
        var plan = new int[EmbeddingScatterPlan.Length(tokens.Length)];
        return (plan, EmbeddingScatterPlan.Build(tokens, plan));
    }

    [Fact]
    public void ScatterPlanGroupsRowsByTokenInRowOrder()
    {
        var (plan, segments) = Plan([5, 2, 5, 0, 2, 5]);
        Assert.Equal(3, segments);
        Assert.Equal([3, 1, 4, 0, 2, 5], plan[..6]);          // rows sorted by (token, row)
        Assert.Equal([0, 1, 3, 6], plan[6..10]);              // segment starts, then the end
        Assert.Equal([0, 2, 5], plan[13..16]);                // each segment's token
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void BackwardIsBitwiseReproducibleAndSurvivesNonFiniteGradients(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        var ops = backend.Get<EmbeddingOps>();
        const int b = 3, t = 7, c = 5, maxT = 7;
        var tokens = Tokens(17, b * t);
        var dout = TestData.Normal(18, b * t * c, 1e3);
        var (planHost, segments) = Plan(tokens);
        using var plan = backend.Upload(planHost);
        using var dOut = backend.Upload(dout);
        float[] Run()
        {
            using var dWte = backend.Zeros<float>(Vocab * c);
            using var dWpe = backend.Zeros<float>(maxT * c);
            ops.Backward(backend.ComputeStream, dWte.View, dWpe.View, dOut.View, plan.View, segments, b, t, c);
            return backend.Download(dWte);
        }
        TensorAssert.Equal(Run(), Run(), "dWte of two runs");

        // A NaN gradient propagates as NaN instead of stalling the kernel.
        dout[0] = float.NaN;
        dout[c] = float.PositiveInfinity;
        using var bad = backend.Upload(dout);
        using var dWteBad = backend.Zeros<float>(Vocab * c);
        using var dWpeBad = backend.Zeros<float>(maxT * c);
        ops.Backward(backend.ComputeStream, dWteBad.View, dWpeBad.View, bad.View, plan.View, segments, b, t, c);
        Assert.True(float.IsNaN(backend.Download(dWteBad)[tokens[0] * c]));
    }
}
