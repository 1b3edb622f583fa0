// The data format follows the file's content and name; raw bytes of a .bin need --data-format bytes.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class DataFormatTests(BackendFixture fixture)
{
    [Theory]
    [InlineData("--data @/data.bin", "llm.c tokens")]
    [InlineData("--data @/badmagic.bin --data-format bytes", "raw bytes")]
    [InlineData("--data @/text.txt", "raw bytes")]
    [InlineData("--data @/data.bin --data-format bytes", "raw bytes")]
    public void EvalReadsTheFormatTheRuleSays(string data, string described)
    {
        using var ws = Workspace.Create(fixture);
        var result = ws.Run(fixture, $"eval --checkpoint @/ck {data} --batch 1 --seq 4 --batches 1 --device cpu");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains(described, result.Out);
        Assert.Equal(1, result.BackendRequests);
    }

    [Fact]
    public void ANonBinFileWithTheMagicIsReadAsTokens()
    {
        using var ws = Workspace.Create(fixture);
        File.Copy(ws["data.bin"], ws["tokens.dat"]);
        var result = ws.Run(fixture, "eval --checkpoint @/ck --data @/tokens.dat --batch 1 --seq 4 --batches 1 --device cpu");
        Assert.True(result.ExitCode == 0, result.Error);
        Assert.Contains("llm.c tokens", result.Out);
    }
}
