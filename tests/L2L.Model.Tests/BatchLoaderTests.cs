// Batch windows: in-order positions with wrap-around, and the seeded per-epoch shuffle.
using L2L.Model.Data;
using Xunit;

namespace L2L.Model.Tests;

public class BatchLoaderTests
{
    /// <summary>Token i is i: the tokens show where each window came from.</summary>
    private sealed class CountingSource(long length) : ITokenSource
    {
        public int VocabSize => (int)length;
        public long Length => length;
        public string Description => "counting";

        public void Read(long start, Span<int> destination)
        {
            for (var i = 0; i < destination.Length; i++) destination[i] = (int)((start + i) % length);
        }
    }

    [Fact]
    public void WindowsFollowTheSpecifiedOrderAndWrap()
    {
        const int b = 3, t = 8, length = 100;
        var loader = new BatchLoader(new CountingSource(length), b, t);
        var inputs = new int[b * t];
        var targets = new int[b * t];
        for (long step = 0; step < 12; step++)
        {
            loader.Fill(step, inputs, targets);
            for (var row = 0; row < b; row++)
            {
                var start = (step * b + row) * t;
                for (var i = 0; i < t; i++)
                {
                    Assert.Equal((int)((start + i) % length), inputs[row * t + i]);
                    Assert.Equal((int)((start + i + 1) % length), targets[row * t + i]);
                }
            }
        }

        // Step 4, row 0 is window 12, starting at 96: it runs off the end and continues at 0.
        loader.Fill(4, inputs, targets);
        Assert.Equal([96, 97, 98, 99, 0, 1, 2, 3], inputs[..8]);
        Assert.Equal([97, 98, 99, 0, 1, 2, 3, 4], targets[..8]);
        // Row 1 is window 13 at 104, i.e. token 4.
        Assert.Equal(4, inputs[8]);
    }

    [Fact]
    public void ShuffleVisitsEveryWindowOncePerEpoch()
    {
        const int b = 4, t = 10, length = 1003; // 100 windows per epoch, 25 steps
        var loader = new BatchLoader(new CountingSource(length), b, t, shuffle: true, seed: 17);
        Assert.Equal(100, loader.WindowsPerEpoch);
        var inputs = new int[b * t];
        var targets = new int[b * t];
        var epochs = new List<int[]>();
        for (var epoch = 0; epoch < 3; epoch++)
        {
            var starts = new List<int>();
            for (var step = epoch * 25; step < (epoch + 1) * 25; step++)
            {
                loader.Fill(step, inputs, targets);
                for (var row = 0; row < b; row++)
                {
                    var start = inputs[row * t];
                    starts.Add(start);
                    for (var i = 0; i < t; i++)
                    {
                        Assert.Equal((start + i) % length, inputs[row * t + i]);
                        Assert.Equal((start + i + 1) % length, targets[row * t + i]);
                    }
                }
            }
            Assert.Equal(Enumerable.Range(0, 100).Select(w => w * t), starts.Order());
            epochs.Add([.. starts]);
        }
        Assert.NotEqual(epochs[0], epochs[1]);
        Assert.NotEqual(epochs[1], epochs[2]);
        Assert.NotEqual(Enumerable.Range(0, 100).Select(w => w * t), epochs[0]);
    }

    [Fact]
    public void ShuffleIsReproducibleFromSeedAndStep()
    {
        var source = new CountingSource(5000);
        var a = new BatchLoader(source, 2, 16, shuffle: true, seed: 3);
        var b = new BatchLoader(source, 2, 16, shuffle: true, seed: 3);
        var c = new BatchLoader(source, 2, 16, shuffle: true, seed: 4);
        var (ia, ta, ib, tb, ic, tc) = (new int[32], new int[32], new int[32], new int[32], new int[32], new int[32]);
        var differs = false;
        // Any step can be asked for directly, in any order, as a resumed run does.
        foreach (var step in new long[] { 1000, 3, 0, 157, 3 })
        {
            a.Fill(step, ia, ta);
            b.Fill(step, ib, tb);
            c.Fill(step, ic, tc);
            Assert.Equal(ia, ib);
            Assert.Equal(ta, tb);
            differs |= !ia.SequenceEqual(ic);
        }
        Assert.True(differs);
    }

    [Fact]
    public void TinySourcesStillWork()
    {
        // Fewer tokens than one window: every window starts at 0 and wraps.
        var loader = new BatchLoader(new CountingSource(5), 2, 8, shuffle: true, seed: 1);
        Assert.Equal(1, loader.WindowsPerEpoch);
        var inputs = new int[16];
        var targets = new int[16];
        loader.Fill(3, inputs, targets);
        Assert.Equal([0, 1, 2, 3, 4, 0, 1, 2], inputs[..8]);
        Assert.Equal([1, 2, 3, 4, 0, 1, 2, 3], targets[..8]);
    }

    [Fact]
    public void WrongBufferSizesAreRejected()
    {
        var loader = new BatchLoader(new CountingSource(100), 2, 4);
        Assert.Throws<ArgumentException>(() => loader.Fill(0, new int[7], new int[8]));
        Assert.Throws<ArgumentException>(() => loader.Fill(0, new int[8], new int[9]));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BatchLoader(new CountingSource(100), 0, 4));
    }
}
