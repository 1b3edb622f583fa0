// Launchers for layer normalisation forward and backward.
using ILGPU;
using ILGPU.Runtime;
using L2L.Kernels;

namespace L2L.Backends.Ops;

/// <summary>Layer normalisation over rows of (N, C), PyTorch semantics; kernels loaded once per accelerator.</summary>
public sealed class LayerNormOps
{
    private readonly Accelerator _accelerator;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float> _forward;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _backwardInput;
    private readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float> _backwardParams;

    /// <summary>Loads the kernels on <paramref name="backend"/>'s accelerator.</summary>
    public LayerNormOps(Backend backend)
    {
        _accelerator = backend.Accelerator;
        _forward = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(LayerNormKernels.LayerNormForwardKernel);
        _backwardInput = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(LayerNormKernels.LayerNormBackwardInputKernel);
        _backwardParams = _accelerator.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(LayerNormKernels.LayerNormBackwardParamsKernel);
    }

    /// <summary>
    /// <c>output (N, C) = (input - mean) * rstd * weight + bias</c> per row, with biased variance and
    /// <paramref name="eps"/> inside the square root; saves <c>mean</c> (N) and <c>rstd</c> (N) for the
    /// backward. <c>weight</c>, <c>bias</c> (C). <c>output</c> may alias <c>input</c>.
    /// </summary>
    public void Forward(AcceleratorStream s, ArrayView<float> output, ArrayView<float> mean, ArrayView<float> rstd,
        ArrayView<float> input, ArrayView<float> weight, ArrayView<float> bias, int n, int c, float eps)
    {
        Check.Positive(n, nameof(n));
        Check.Positive(c, nameof(c));
        var size = (long)n * c;
        Check.Length(output, size, nameof(output));
        Check.Length(input, size, nameof(input));
        Check.Length(mean, n, nameof(mean));
        Check.Length(rstd, n, nameof(rstd));
        Check.Length(weight, c, nameof(weight));
        Check.Length(bias, c, nameof(bias));
        if (!(eps >= 0f))
            throw new ArgumentOutOfRangeException(nameof(eps), eps, "'eps' must be non-negative.");
        _forward(s, RowLaunch.Rows(_accelerator, n, c), output, mean, rstd, input, weight, bias, n, c, eps);
    }

    /// <summary>
    /// The backward of <see cref="Forward"/>: <c>dInput</c> (N, C) is assigned, or added to when
    /// <paramref name="accumulateInput"/> (for a residual stream); <c>dWeight</c> (C) and <c>dBias</c> (C)
    /// are always added to, summed over rows deterministically. <c>dOutput</c>, <c>input</c> (N, C);
    /// <c>weight</c> (C); <c>mean</c>, <c>rstd</c> (N) as saved by the forward. <c>dInput</c> may alias <c>dOutput</c>.
    /// The parameter gradients' row sums are multiplied by <paramref name="paramGradScale"/> before they are added
    /// (1, the default, leaves them unchanged bit for bit); <c>dInput</c> is never scaled.
    /// </summary>
    public void Backward(AcceleratorStream s, ArrayView<float> dInput, ArrayView<float> dWeight, ArrayView<float> dBias,
        ArrayView<float> dOutput, ArrayView<float> input, ArrayView<float> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, bool accumulateInput, float paramGradScale = 1f)
    {
        Check.Positive(n, nameof(n));
        Check.Positive(c, nameof(c));
        var size = (long)n * c;
        Check.Length(dInput, size, nameof(dInput));
        Check.Length(dOutput, size, nameof(dOutput));
        Check.Length(input, size, nameof(input));
        Check.Length(dWeight, c, nameof(dWeight));
        Check.Length(dBias, c, nameof(dBias));
        Check.Length(weight, c, nameof(weight));
        Check.Length(mean, n, nameof(mean));
        Check.Length(rstd, n, nameof(rstd));
        // The parameter gradients read dOutput, so they run first: dInput may then overwrite it in place.
        var group = Launch.GroupSize(_accelerator, 256);
        var tileWidth = Math.Min(32, group);
        var paramsConfig = new KernelConfig(RowLaunch.Groups(_accelerator, Launch.CeilDiv(c, tileWidth), group), group);
        _backwardParams(s, paramsConfig, dWeight, dBias, dOutput, input, mean, rstd, n, c, paramGradScale);
        _backwardInput(s, RowLaunch.Rows(_accelerator, n, c), dInput, dOutput, input, weight, mean, rstd, n, c,
            accumulateInput ? 1 : 0);
    }
}
