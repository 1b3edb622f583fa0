// Cached single-query attention against the double-precision attention reference (the last row of causal attention).
using L2L.Backends;
using L2L.Backends.Ops;
using L2L.TestSupport;
using L2L.TestSupport.Reference;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class KvCacheAttentionTests(BackendFixture fixture)
{
    public static TheoryData<DeviceKind> Devices => TestSupport.Devices.All;

    private static void Run(Backend backend, int c, int nh, int length, double scale, string what)
    {
        var ops = backend.Get<KvCacheAttentionOps>();
        var s = backend.ComputeStream;
        var maxT = length + 5;
        var qkv = TestData.Normal(c * 31 + length, length * 3 * c, scale);
        // Rows past the attended length hold huge values: reading them would show in the output.
        var poison = Enumerable.Repeat(1e30f, maxT * c).ToArray();
        using var kCache = backend.Upload(poison);
        using var vCache = backend.Upload(poison);
        using var rows = backend.Upload(qkv);
        // All but the last row in one append at position 0, the last one at its own position, as generation does.
        if (length > 1)
            ops.Append(s, kCache.View, vCache.View, rows.View.SubView(0, (long)(length - 1) * 3 * c), 0, length - 1, c, maxT);
        var last = rows.View.SubView((long)(length - 1) * 3 * c, 3L * c);
        ops.Append(s, kCache.View, vCache.View, last, length - 1, 1, c, maxT);
        using var scores = backend.Zeros<float>(KvCacheAttentionOps.ScoresLength(nh, maxT));
        using var output = backend.Zeros<float>(c);
        ops.Attend(s, output.View, scores.View, last, kCache.View, vCache.View, length, c, nh, maxT);

        var (full, _) = AttentionReference.Forward(TestData.ToDouble(qkv), null, 1, length, c, nh, causal: true);
        var expected = full.AsSpan((length - 1) * c, c).ToArray();
        var tolerance = backend.Kind == DeviceKind.Cpu ? 1e-5 : 1e-3;
        TensorAssert.Close(expected, backend.Download(output), tolerance, tolerance, what);

        // The cache rows are exactly the k and v parts of each row.
        var k = backend.Download(kCache);
        var v = backend.Download(vCache);
        for (var t = 0; t < length; t++)
            for (var i = 0; i < c; i++)
            {
                Assert.Equal(qkv[t * 3 * c + c + i], k[t * c + i]);
                Assert.Equal(qkv[t * 3 * c + 2 * c + i], v[t * c + i]);
            }
        Assert.Equal(1e30f, k[length * c]);
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void MatchesTheLastRowOfCausalAttentionOnOddShapes(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        foreach (var (c, nh) in new[] { (1, 1), (3, 1), (7, 7), (22, 2), (24, 3) })
            foreach (var length in new[] { 1, 3, 7, 22, 127 })
                Run(backend, c, nh, length, 1.0, $"c={c} nh={nh} length={length}");
    }

    [Theory]
    [MemberData(nameof(Devices))]
    public void LargeScoresStayFinite(DeviceKind kind)
    {
        var backend = fixture.Get(kind);
        Run(backend, 8, 2, 22, 30.0, "scores of magnitude ~1e3");
    }

    [Fact]
    public void OutOfRangeArgumentsAreRefused()
    {
        var backend = fixture.Get(DeviceKind.Cpu);
        var ops = backend.Get<KvCacheAttentionOps>();
        using var cache = backend.Zeros<float>(4 * 6);
        using var qkv = backend.Zeros<float>(3 * 6);
        using var scores = backend.Zeros<float>(2 * 4);
        using var output = backend.Zeros<float>(6);
        var s = backend.ComputeStream;
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Append(s, cache.View, cache.View, qkv.View, 4, 1, 6, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Attend(s, output.View, scores.View, qkv.View, cache.View, cache.View, 5, 6, 2, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => ops.Attend(s, output.View, scores.View, qkv.View, cache.View, cache.View, 0, 6, 2, 4));
        Assert.Throws<ArgumentException>(() => ops.Attend(s, output.View, scores.View, qkv.View, cache.View, cache.View, 2, 6, 4, 4));
    }
}
