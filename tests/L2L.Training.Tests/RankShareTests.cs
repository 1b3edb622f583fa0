// How a rank takes its share of the global minibatch: sequences r, r+R, …, so the ranks together cover it once.
using L2L.Training;
using Xunit;

namespace L2L.Training.Tests;

public sealed class RankShareTests
{
    [Theory]
    [InlineData(1, 4, 3)]
    [InlineData(2, 4, 3)]
    [InlineData(3, 6, 7)]
    [InlineData(4, 4, 1)]
    public void EveryRankTakesEveryRthSequence_AndTheSharesCoverTheMinibatchOnce(int worldSize, int batch, int seqLen)
    {
        // Token i of sequence b is b * 1000 + i, so each copied value says where it came from.
        var minibatch = new int[batch * seqLen];
        for (var b = 0; b < batch; b++)
        for (var i = 0; i < seqLen; i++)
            minibatch[b * seqLen + i] = b * 1000 + i;
        var seen = new List<int>();
        for (var rank = 0; rank < worldSize; rank++)
        {
            var share = new int[batch / worldSize * seqLen];
            Trainer.TakeShare(minibatch, share, seqLen, rank, worldSize);
            for (var k = 0; k < batch / worldSize; k++)
            {
                var sequence = rank + k * worldSize;
                Assert.Equal(Enumerable.Range(0, seqLen).Select(i => sequence * 1000 + i), share.Skip(k * seqLen).Take(seqLen));
                seen.Add(sequence);
            }
        }
        Assert.Equal(Enumerable.Range(0, batch), seen.Order());
    }

    [Fact]
    public void AShareOfTheWrongSizeOrRankIsRefused()
    {
        var minibatch = new int[6 * 2];
        Assert.Throws<ArgumentException>(() => Trainer.TakeShare(minibatch, new int[4], 2, 0, 4)); // 6 sequences do not split into 4
        Assert.Throws<ArgumentException>(() => Trainer.TakeShare(minibatch, new int[5], 2, 0, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => Trainer.TakeShare(minibatch, new int[6], 2, 2, 2));
    }
}
