// The top-level handler: one line for every failure, the trace only with --verbose.
using L2L.Cli.Validation;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class ErrorHandlerTests
{
    [Fact]
    public void AnUnexpectedExceptionIsOneLinePointingAtVerbose()
    {
        using var quiet = new StringWriter();
        Assert.Equal(1, Cli.Report(new InvalidOperationException("the pool is drained"), quiet, verbose: false));
        var line = Assert.Single(quiet.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal("error: unexpected InvalidOperationException: the pool is drained. Run with --verbose for details.", line.TrimEnd());

        using var loud = new StringWriter();
        Exception thrown;
        try { throw new InvalidOperationException("the pool is drained"); }
        catch (InvalidOperationException e) { thrown = e; }
        Cli.Report(thrown, loud, verbose: true);
        var lines = loud.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("error: unexpected InvalidOperationException", lines[0]);
        Assert.Contains(lines, l => l.TrimStart().StartsWith("at ", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Beta1 must be in [0, 1). (Parameter 'settings')\nActual value was 1.5.", "Beta1 must be in [0, 1).")]
    [InlineData("Checkpoint model file 'x' does not match its config:\n  - missing 1 tensor(s): wte.weight\n  - 'ln_f.bias' has shape [3]", "Checkpoint model file 'x' does not match its config: missing 1 tensor(s): wte.weight; 'ln_f.bias' has shape [3].")]
    public void ExpectedFailuresBecomeOneSentence(string message, string expected)
    {
        using var stderr = new StringWriter();
        Assert.Equal(1, Cli.Report(new ArgumentOutOfRangeException(null, message), stderr, verbose: false));
        Assert.Equal($"error: {expected}", Assert.Single(stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries)).TrimEnd());
    }

    [Fact]
    public void CliErrorsKeepTheirExitCode()
    {
        using var stderr = new StringWriter();
        Assert.Equal(2, Cli.Report(new CliException("--x is wrong. Do y", 2), stderr, verbose: false));
        Assert.Equal("error: --x is wrong. Do y.", stderr.ToString().TrimEnd());
    }
}
