// Finds the loops of a PTX listing and counts what their bodies execute, for tests of the kernels' hot loops.
using System.Text.RegularExpressions;

namespace L2L.Kernels.Tests;

/// <summary>
/// One loop of a PTX function: the lines from a label to the last branch back to it.
/// </summary>
/// <remarks>
/// How loops are found: every label line <c>L_n:</c> that some later <c>bra</c> / <c>bra.uni</c> jumps back to
/// starts a loop, which ends at that backward branch. ILGPU emits a loop as its header label, the body, and an
/// unconditional branch back to the header, so this span is the loop body. A loop is <em>innermost</em> when no other
/// such span lies inside it. The hot loop of a kernel is its innermost loop with the most multiply-adds.
/// Multiply-adds are counted as <c>fma.rn.f32</c> plus each <c>mul.f32</c> whose result an <c>add.f32</c> of the same
/// loop consumes: ILGPU 1.5.3 writes <c>a * b + c</c> as an unrounded <c>mul.f32</c>/<c>add.f32</c> pair, which the
/// PTX ISA lets ptxas contract into one FFMA (it does by default).
/// </remarks>
public sealed partial record PtxLoop(int FirstLine, int LastLine, IReadOnlyList<string> Instructions)
{
    /// <summary>Instructions in the body (lines ending in ';').</summary>
    public int InstructionCount => Instructions.Count;

    /// <summary>Multiply-adds in the body (see the type's remarks).</summary>
    public int MultiplyAdds
    {
        get
        {
            var adds = Instructions.Where(i => i.StartsWith("add.f32", StringComparison.Ordinal) || i.StartsWith("sub.f32", StringComparison.Ordinal)).ToList();
            var fused = Instructions.Select(i => MulDestination().Match(i)).Where(m => m.Success)
                .Count(m => adds.Any(a => Regex.IsMatch(a, Regex.Escape(m.Groups[1].Value) + @"(?![\d])")));
            return Instructions.Count(i => i.StartsWith("fma.rn.f32", StringComparison.Ordinal)) + fused;
        }
    }

    /// <summary>Shared-memory load instructions (any width).</summary>
    public int SharedLoads => Instructions.Count(i => i.StartsWith("ld.shared", StringComparison.Ordinal));

    /// <summary>64-bit integer divisions and remainders.</summary>
    public IReadOnlyList<string> Divisions64 => Instructions.Where(i => Division64().IsMatch(i)).ToList();

    /// <summary>Every loop of <paramref name="ptx"/>, in order of their first line.</summary>
    public static IReadOnlyList<PtxLoop> All(string ptx)
    {
        var lines = ptx.Split('\n');
        var labels = new Dictionary<string, int>();
        for (var i = 0; i < lines.Length; i++)
            if (Label().Match(lines[i]) is { Success: true } m)
                labels[m.Groups[1].Value] = i;
        var ends = new Dictionary<int, int>();
        for (var j = 0; j < lines.Length; j++)
            if (Branch().Match(lines[j]) is { Success: true } m && labels.TryGetValue(m.Groups[1].Value, out var start) && start < j)
                ends[start] = j; // the last backward branch closes the loop
        return ends.OrderBy(e => e.Key).Select(e => new PtxLoop(e.Key, e.Value,
            lines[e.Key..(e.Value + 1)].Select(l => l.Trim()).Where(l => l.EndsWith(';')).ToList())).ToList();
    }

    /// <summary>The loops of <paramref name="ptx"/> that contain no other loop.</summary>
    public static IReadOnlyList<PtxLoop> Innermost(string ptx)
    {
        var all = All(ptx);
        return all.Where(l => !all.Any(o => o != l && o.FirstLine >= l.FirstLine && o.LastLine <= l.LastLine)).ToList();
    }

    /// <summary>The innermost loop with the most multiply-adds.</summary>
    public static PtxLoop Hot(string ptx) => Innermost(ptx).OrderByDescending(l => l.MultiplyAdds).ThenBy(l => l.FirstLine).First();

    [GeneratedRegex(@"^\s*(\$?L_\w+):")]
    private static partial Regex Label();

    [GeneratedRegex(@"\bbra(?:\.uni)?\s+(\$?L_\w+)\s*;")]
    private static partial Regex Branch();

    [GeneratedRegex(@"^mul(?:\.rn)?\.f32\s+(%f\d+)")]
    private static partial Regex MulDestination();

    [GeneratedRegex(@"^(?:div|rem)(?:\.\w+)*\.[su]64\b")]
    private static partial Regex Division64();
}
