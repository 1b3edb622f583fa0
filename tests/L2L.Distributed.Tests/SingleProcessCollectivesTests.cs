// The one-rank collectives used when no launcher started the process.
using L2L.Training.Distributed;
using Xunit;

namespace L2L.Distributed.Tests;

public sealed class SingleProcessCollectivesTests
{
    [Fact]
    public void OneRank_SumsAreTheOwnValuesAndGathersAreCopies()
    {
        using var one = new SingleProcessCollectives();
        Assert.Equal((0, 1), (one.Rank, one.WorldSize));
        float[] values = Driver.ScenarioData.Values(0, 22, 5);
        float[] buffer = (float[])values.Clone();
        one.AllReduceSum(buffer);
        Assert.Equal(values, buffer);
        float[] block = new float[22];
        one.ReduceScatterBlockSum(values, block);
        Assert.Equal(values, block);
        float[] all = new float[22];
        one.AllGather(block, all);
        Assert.Equal(values, all);
        Assert.Throws<ArgumentOutOfRangeException>(() => one.Broadcast(new byte[3], root: 1));
        Assert.Throws<ArgumentException>(() => one.ReduceScatterBlockSum(values, new float[21]));
    }
}
