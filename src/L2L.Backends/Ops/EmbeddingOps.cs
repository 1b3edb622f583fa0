// Launchers for the token + position embedding.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Token + position embedding forward and parameter gradients; kernels loaded once per accelerator.</summary>
public sealed class EmbeddingOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float> _backwardToken;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, float> _backwardPosition;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public EmbeddingOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int>(
            EmbeddingKernels.EmbeddingForwardKernel);
        _backwardToken = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardTokenKernel);
        _backwardPosition = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, int, int, int, float>(
            EmbeddingKernels.EmbeddingBackwardPositionKernel);
    }

    /// <summary>
    /// <c>output[b*T + t] = wte[tokens[b*T + t]] + wpe[t]</c>: <c>output</c> (B*T, C), <c>tokens</c> (B*T)
    /// int32 already validated to lie in <c>[0, V)</c> on the host, <c>wte</c> (V, C), <c>wpe</c> (maxT, C) with maxT &gt;= T.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<int> tokens, ArrayView<float> wte,
        ArrayView<float> wpe, int b, int t, int c)
    {
        CheckShapes(output, tokens, wte, wpe, b, t, c, nameof(output), nameof(wte), nameof(wpe));
        _forward(s, Launch.Elementwise(_accelerator, output.Length), output, tokens, wte, wpe, t, c);
    }

    /// <summary>
    /// <c>dWte</c> (V, C) += <c>dOutput</c> (B*T, C) rows scattered by token, and <c>dWpe</c> (maxT, C)
    /// rows <c>0..T-1</c> += the sum over the batch; both deterministic, without atomics.
    /// <paramref name="plan"/> is the device copy of <see cref="EmbeddingScatterPlan.Build"/>'s output for
    /// the same tokens, and <paramref name="segments"/> its return value. Each row sum is multiplied by
    /// <paramref name="tokenScale"/> (into <c>dWte</c>) or <paramref name="positionScale"/> (into <c>dWpe</c>) before it
    /// is added; 1 (the default) leaves it unchanged bit for bit.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dWte, ArrayView<float> dWpe, ArrayView<float> dOutput,
        ArrayView<int> plan, int segments, int b, int t, int c, float tokenScale = 1f, float positionScale = 1f)
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        var rows = b * t;
        Check.Length(plan, EmbeddingScatterPlan.Length(rows), nameof(plan));
        CheckShapes(dOutput, plan.SubView(0, rows), dWte, dWpe, b, t, c, nameof(dOutput), nameof(dWte), nameof(dWpe));
        if (segments < 1 || segments > rows)
            throw new ArgumentOutOfRangeException(nameof(segments), segments, $"A plan for {rows} rows has between 1 and {rows} segments.");
        _backwardToken(s, Launch.Elementwise(_accelerator, (long)segments * c), dWte, dOutput, plan, rows, segments, c, tokenScale);
        _backwardPosition(s, Launch.Elementwise(_accelerator, (long)t * c), dWpe, dOutput, b, t, c, positionScale);
    }

    private static void CheckShapes(ArrayView<float> rows, ArrayView<int> tokens, ArrayView<float> wte, ArrayView<float> wpe,
        int b, int t, int c, string rowsName, string wteName, string wpeName)
    {
        Check.Positive(b, nameof(b));
        Check.Positive(t, nameof(t));
        Check.Positive(c, nameof(c));
        Check.Length(tokens, (long)b * t, nameof(tokens));
        Check.Length(rows, (long)b * t * c, rowsName);
        if (wte.Length == 0 || wte.Length % c != 0)
            throw new ArgumentException($"'{wteName}' has {wte.Length} elements, expected a positive multiple of C = {c} (V, C).", wteName);
        if (wpe.Length % c != 0)
            throw new ArgumentException($"'{wpeName}' has {wpe.Length} elements, expected a multiple of C = {c} (maxT, C).", wpeName);
        Check.AtLeast(wpe, (long)t * c, wpeName);
    }
}
