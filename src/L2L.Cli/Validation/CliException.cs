// The one exception type the commands throw for bad input: its message is the whole error line.
namespace L2L.Cli.Validation;

/// <summary>
/// A problem with what the user asked for, found before any work starts. The message reads
/// "what is wrong. what to do"; the top-level handler prints it after <c>error: </c>.
/// </summary>
public sealed class CliException : Exception
{
    /// <summary>Creates the error; <paramref name="exitCode"/> is 1 for bad values, 2 for usage errors.</summary>
    public CliException(string message, int exitCode = 1) : base(message) => ExitCode = exitCode;

    /// <summary>The process exit code.</summary>
    public int ExitCode { get; }
}
