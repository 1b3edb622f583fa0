// How a rank takes its share of the global minibatch: sequences r, r+R, …, so the ranks together cover it once.
using L2L.Training.Distributed;
using L2L.Training.Parallel;
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
            new ParallelSetup([], new World(rank, worldSize)).TakeRankShare(minibatch, share, seqLen);
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
    public void AShareOfTheWrongSizeIsRefused()
    {
        var minibatch = new int[6 * 2];
        Assert.Throws<ArgumentException>(() => new ParallelSetup([], new World(0, 4)).TakeRankShare(minibatch, new int[4], 2)); // 6 sequences do not split into 4
        Assert.Throws<ArgumentException>(() => new ParallelSetup([], new World(0, 2)).TakeRankShare(minibatch, new int[5], 2));
    }

    // Only the rank and the world size matter here: no collective is called.
    private sealed unsafe class World(int rank, int size) : IHostCollectives
    {
        public int Rank => rank;
        public int WorldSize => size;
        public string Description => $"rank {rank} of {size} (no transport)";
        public void Barrier() => throw new NotSupportedException();
        public void AllReduceSum(float* buffer, long count) => throw new NotSupportedException();
        public void ReduceScatterBlockSum(float* send, float* block, long blockCount) => throw new NotSupportedException();
        public void AllGather(float* block, float* all, long blockCount) => throw new NotSupportedException();
        public void Broadcast(byte* buffer, long count, int root) => throw new NotSupportedException();
        public void Abort(int exitCode, string message) => throw new NotSupportedException();
        public void Dispose() { }
    }
}
