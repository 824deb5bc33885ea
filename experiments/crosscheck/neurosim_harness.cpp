#include <cstdio>
#include <random>
#include <cmath>
#include <iostream>
#include <vector>
#include "constant.h"
#include "formula.h"
#include "Param.h"
#include "SubArray.h"
#include "Definition.h"
#include "ProcessingUnit.h"
using namespace std;
int main(int argc, char**argv){
  int memtype = argc>1? atoi(argv[1]) : 2;   // 2 RRAM
  int acc = argc>2? atoi(argv[2]) : 4;       // 4 crossbar
  double gfrac = argc>3? atof(argv[3]) : 0.5; // conductance fraction between Gmin,Gmax
  param->memcelltype = memtype; param->accesstype = acc;
  if (acc!=1) { param->wireLengthRow = param->wireWidth*1e-9*param->heightInFeatureSizeCrossbar; param->wireLengthCol = param->wireWidth*1e-9*param->widthInFeatureSizeCrossbar;
    param->wireResistanceRow = param->unitLengthWireResistance*param->wireLengthRow; param->wireResistanceCol = param->unitLengthWireResistance*param->wireLengthCol; }
  param->synapseBit = 5; param->numBitInput = 8; param->numColPerSynapse = 1; param->numRowPerSynapse=1;
  inputParameter.transistorType = conventional; inputParameter.deviceRoadmap = LSTP;
  inputParameter.temperature = param->temp; inputParameter.processNode = param->technode;
  tech.Initialize(inputParameter.processNode, inputParameter.deviceRoadmap, inputParameter.transistorType);
  cell.memCellType = (memtype==2)? Type::RRAM : Type::FeFET;
  cell.accessType = (acc==4)? none_access : CMOS_access;
  cell.resistanceOn = param->resistanceOn; cell.resistanceOff = param->resistanceOff;
  cell.resistanceAvg = (cell.resistanceOn + cell.resistanceOff)/2;
  cell.readVoltage = param->readVoltage; cell.readPulseWidth = param->readPulseWidth;
  cell.accessVoltage = param->accessVoltage; cell.resistanceAccess = param->resistanceAccess;
  cell.featureSize = param->featuresize;
  cell.maxNumLevelLTP = param->maxNumLevelLTP; cell.maxNumLevelLTD = param->maxNumLevelLTD;
  cell.writeVoltage = sqrt(2.0)*param->writeVoltage; cell.writePulseWidth = param->writePulseWidth;
  cell.nonlinearIV = param->nonlinearIV; cell.nonlinearity = param->nonlinearity;
  cell.heightInFeatureSize = (acc==1)? param->heightInFeatureSize1T1R : param->heightInFeatureSizeCrossbar;
  cell.widthInFeatureSize = (acc==1)? param->widthInFeatureSize1T1R : param->widthInFeatureSizeCrossbar;
  SubArray *s = new SubArray(inputParameter, tech, cell);
  s->trainingEstimation = false; s->XNORparallelMode=0; s->XNORsequentialMode=0; s->BNNparallelMode=0; s->BNNsequentialMode=0;
  s->conventionalParallel=1; s->conventionalSequential=0; s->parallelBP = 1;
  s->numRow = param->numRowSubArray; s->numCol = param->numColSubArray;
  s->levelOutput = param->levelOutput; s->levelOutputBP = param->levelOutputAG;
  s->numColMuxed = param->numColMuxed; s->numRowMuxedBP = param->numRowMuxedAG;
  s->clkFreq = param->clkFreq; s->relaxArrayCellHeight = 0; s->relaxArrayCellWidth = 0;
  s->numReadPulse = param->numBitInput; s->avgWeightBit = param->cellBit; s->numCellPerSynapse = 1;
  s->numReadPulseBP = 8; s->activityBPColRead = 0.5; s->SARADC = param->SARADC; s->currentMode = param->currentMode;
  s->spikingMode = NONSPIKING;
  int R = param->numRowSubArray, C = param->numColSubArray;
  s->numReadCellPerOperationFPGA = C; s->numWriteCellPerOperationFPGA = C; s->numReadCellPerOperationMemory = C;
  s->numWriteCellPerOperationMemory = C/8; s->numReadCellPerOperationNeuro = C; s->numWriteCellPerOperationNeuro = C;
  s->maxNumWritePulse = 60; s->numWritePulseAVG = 0; s->activityColWrite = 0; s->activityRowWrite = 0; s->activityRowRead = 1;
  s->writeDynamicEnergyArray = 0; s->totalNumWritePulse = 0; s->layerNumber = 0;
  s->Initialize(R, C, param->unitLengthWireResistance);
  s->CalculateArea();
  double wRow = param->wireWidth*1e-9*cell.widthInFeatureSize*param->unitLengthWireResistance; // per-cell wire R
  double G = param->minConductance + gfrac*(param->maxConductance-param->minConductance);
  vector<double> colR, rowR;
  for (int j=0;j<C;j++){ double g=0; for(int i=0;i<R;i++){ g += 1.0/(1.0/G + (j+1)*param->wireResistanceRow + (R-i)*param->wireResistanceCol);} colR.push_back(1.0/g);}
  for (int i=0;i<R;i++) rowR.push_back(1.0/(G*C/2));
  int npulse = argc>4? atoi(argv[4]) : 0;
  if (npulse) {
    double dG = (param->maxConductance-param->minConductance)/60.0;
    vector<vector<double> > oldM(R, vector<double>(C, param->minConductance + 10*dG)), newM(R, vector<double>(C, param->minConductance + (10+npulse)*dG));
    double acw, arw, eArr; int nAvg, nTot;
    GetWriteUpdateEstimation(s, tech, cell, newM, oldM, &acw, &arw, &nAvg, &nTot, &eArr);
    s->activityColWrite=acw; s->activityRowWrite=arw; s->numWritePulseAVG=nAvg; s->totalNumWritePulse=nTot; s->writeDynamicEnergyArray=eArr;
    double eCells=0; for(int i=0;i<R;i++) for(int j=0;j<C;j++) eCells += cell.writeVoltage*cell.writeVoltage/((1/newM[i][j]+1/oldM[i][j])/2)*cell.writePulseWidth*npulse;
    printf("WRITE: npulse=%d acw=%g arw=%g numWritePulseAVG=%d totalNumWritePulse=%d writeDynamicEnergyArray=%g (cell-only part %g) Vw_eff=%g tw=%g\n", npulse, acw, arw, nAvg, nTot, eArr, eCells, cell.writeVoltage, cell.writePulseWidth);
  }
  s->CalculateLatency(1e20, colR, rowR);
  s->CalculatePower(colR, rowR);
  printf("tech.featureSize=%g vdd=%g  cell.featureSize=%g\n", tech.featureSize, tech.vdd, cell.featureSize);
  printf("unitLengthWireResistance=%g ohm/m wireResistanceRow=%g wireResistanceCol=%g\n", param->unitLengthWireResistance, param->wireResistanceRow, param->wireResistanceCol);
  printf("lengthRow=%g lengthCol=%g capRow1=%g capRow2=%g capCol=%g resRow=%g resCol=%g\n", s->lengthRow, s->lengthCol, s->capRow1, s->capRow2, s->capCol, s->resRow, s->resCol);
  printf("G=%g colR[0]=%g colR[C-1]=%g\n", G, colR[0], colR[C-1]);
  printf("wlSwitchMatrix capTgDrain=%g capTgGateN=%g capTgGateP=%g readE=%g (dff %g)\n", s->wlSwitchMatrix.capTgDrain, s->wlSwitchMatrix.capTgGateN, s->wlSwitchMatrix.capTgGateP, s->wlSwitchMatrix.readDynamicEnergy, s->wlSwitchMatrix.dff.readDynamicEnergy);
  printf("wlNewSwitchMatrix readE=%g\n", s->wlNewSwitchMatrix.readDynamicEnergy);
  printf("mux readE=%g muxDecoder readE=%g (sum/numReadPulse=%g)\n", s->mux.readDynamicEnergy, s->muxDecoder.readDynamicEnergy, (s->mux.readDynamicEnergy+s->muxDecoder.readDynamicEnergy)/s->numReadPulse);
  printf("multilevelSenseAmp readE=%g  SAEncoder readE=%g sarADC=%g\n", s->multilevelSenseAmp.readDynamicEnergy, s->multilevelSAEncoder.readDynamicEnergy, s->sarADC.readDynamicEnergy);
  printf("shiftAddWeight=%g shiftAddInput=%g\n", s->shiftAddWeight.readDynamicEnergy, s->shiftAddInput.readDynamicEnergy);
  printf("readDynamicEnergyArray=%g\n", s->readDynamicEnergyArray);
  printf("readDynamicEnergy total=%g  ADC=%g Accum=%g Other=%g\n", s->readDynamicEnergy, s->readDynamicEnergyADC, s->readDynamicEnergyAccum, s->readDynamicEnergyOther);
  printf("readLatency=%g\n", s->readLatency);
  printf("writeDynamicEnergy=%g wlSM.write=%g slSM.write=%g writeLatency=%g\n", s->writeDynamicEnergy, s->wlSwitchMatrix.writeDynamicEnergy, s->slSwitchMatrix.writeDynamicEnergy, s->writeLatency);
  double eCell=0; for(int j=0;j<C;j++) eCell += cell.readVoltage*cell.readVoltage/colR[j]*cell.readPulseWidth;
  printf("reference V^2*Gcol*t_read summed (not used by NeuroSim) = %g\n", eCell);
  return 0;
}
